import pytest

from srsearch.common.errors import UserError
from srsearch.common.sizes import TARGET_OUTPUT, lr_size, parse_size
from srsearch.deploy.export import default_input_size


def test_parse_size_reads_width_by_height_and_names_the_flag():
    assert parse_size("1280x720") == (1280, 720)
    assert parse_size(" 640 X 360 ") == (640, 360)
    for bad in ("1280", "0x720", "-5x3", "axb", "1x2x3"):
        with pytest.raises(UserError, match=r"--input-size .*WIDTHxHEIGHT"):
            parse_size(bad, "--input-size")


def test_lr_size_is_height_width_rounded_up_and_the_export_default_agrees():
    assert lr_size((1280, 720), 3) == (240, 427)  # (H, W) from (W, H)
    for scale in (2, 3, 4):
        h, w = lr_size(TARGET_OUTPUT, scale)
        assert default_input_size(scale) == (w, h)  # the export's (W, H)
