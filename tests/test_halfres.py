"""The half-resolution family (session 13's measured-and-lost primitive): exact skip, exact
space-to-depth, exact ECB collapse, any input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from srsearch.common.errors import UserError
from srsearch.models import build_model, inference_form
from srsearch.models.halfres import s2d_weight, skip_weight


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_with_zero_weights_the_net_is_bicubic_upsampling(scale):
    for lr_width in (0, 8):
        net = build_model({"family": "halfres", "scale": scale, "width": 8, "depth": 1,
                           "lr_width": lr_width})
        for p in net.parameters():
            torch.nn.init.zeros_(p)
        x = torch.rand(1, 3, 20, 24)
        want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        m = 4 * scale  # away from the border (two LR pixels, rounded up to the half grid)
        torch.testing.assert_close(net(x)[..., m:-m, m:-m], want[..., m:-m, m:-m],
                                   atol=1e-5, rtol=0)


def test_space_to_depth_is_pixel_unshuffle():
    x = torch.rand(2, 3, 8, 6)
    torch.testing.assert_close(F.conv2d(x, s2d_weight(), stride=2), F.pixel_unshuffle(x, 2))
    assert skip_weight(2).shape == (48, 12, 3, 3)


@pytest.mark.parametrize("lr_width", [0, 8])
def test_odd_sizes_give_the_scaled_size(lr_width):
    net = build_model({"family": "halfres", "scale": 3, "width": 8, "depth": 1,
                       "lr_width": lr_width})
    assert net(torch.rand(1, 3, 13, 10)).shape == (1, 3, 39, 30)


def test_ecb_form_collapses_to_the_same_function():
    torch.manual_seed(0)
    net = build_model({"family": "halfres", "width": 8, "depth": 2, "rep": "ecb"}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plain = inference_form(net)
    assert plain.config()["rep"] == "none" and not any("branches" in n for n, _ in
                                                       plain.named_parameters())
    x = torch.rand(1, 3, 12, 14)
    torch.testing.assert_close(plain(x), net(x), atol=1e-5, rtol=0)


def test_bad_config_is_refused_by_name():
    with pytest.raises(ValueError, match="rep"):
        build_model({"family": "halfres", "rep": "repvgg"})
    with pytest.raises(UserError, match="unknown keys"):
        build_model({"family": "halfres", "widht": 8})
