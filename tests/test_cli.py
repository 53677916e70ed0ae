import pytest

from srsearch.cli import COMMAND_MODULES, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert f"    {name}" in text
    assert set(COMMAND_MODULES) >= {
        "pipeline",
        "train",
        "eval",
        "supernet",
        "bench",
        "latency",
        "search",
        "export",
        "data",
    }
