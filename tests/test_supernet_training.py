import json
import subprocess

import pytest
import torch

from srsearch.cli import main
from srsearch.train.supernet_training import SupernetModule, load_supernet, space_to_dict, val_archs
from supernet.space import SearchSpace
from tests.conftest import cli_cmd

TINY = ["--batch-size", "2", "--lr-patch", "8", "--max-width", "12", "--max-depth", "2"]


def test_supernet_run_trains_saves_and_hands_out_subnets(image_dir, tmp_path):
    out = tmp_path / "sn"
    args = [
        "supernet",
        "--data",
        str(image_dir),
        "--max-steps",
        "6",
        "--warmup-steps",
        "2",
        "--val-every",
        "3",
        "--ckpt-every",
        "3",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 6
    for name in ("max", "min", "rand0", "rand1", "rand2"):
        assert 5 < summary[f"val/psnr_{name}"] < 60
    payload = torch.load(out / "supernet.pt", weights_only=True)  # no pickled modules
    assert payload["format"] == "srsearch.supernet/1"
    net = load_supernet(out)
    assert max(net.space.widths) == 12 and net.space.max_depth == 2
    # the checkpoint and the final file hold the same weights
    from_ckpt = load_supernet(out / "checkpoints" / "last.ckpt")
    x = torch.rand(1, 3, 10, 10)
    for _, arch in val_archs(net.space):
        net.set_active_subnet(arch)
        from_ckpt.set_active_subnet(arch)
        sub = net.get_active_subnet(arch).eval()
        torch.testing.assert_close(sub(x), net(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(from_ckpt(x), net(x))
    # resume continues the step count
    assert main([*args[:4], "8", *args[5:], "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 8


def test_channels_are_reordered_after_warmup(image_dir, tmp_path):
    out = tmp_path / "sn"
    assert (
        main(
            [
                "supernet",
                "--data",
                str(image_dir),
                "--max-steps",
                "3",
                "--warmup-steps",
                "2",
                "--val-every",
                "3",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    net = load_supernet(out)
    # one sandwich step after the reorder leaves importance close to sorted: the head's
    # filters (trunk channel space) are in non-increasing L1 order up to that one step
    imp = net.channel_importance()
    trunk = imp["trunk"]
    diffs = trunk[1:] - trunk[:-1]
    assert (diffs <= 0.05 * trunk.max()).all()


def test_supernet_two_process_ddp(image_dir, tmp_path, cli_env):
    out = tmp_path / "ddp"
    args = [
        "supernet",
        "--data",
        str(image_dir),
        "--max-steps",
        "3",
        "--warmup-steps",
        "1",
        "--val-every",
        "3",
        "--out",
        str(out),
        *TINY,
        "--devices",
        "2",
        "--strategy",
        "ddp",
    ]
    done = subprocess.run(cli_cmd(*args), env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 3 and summary["world_size"] == 2


def test_bad_space_flags(tmp_path, capsys):
    assert main(["supernet", "--max-width", "30", "--out", str(tmp_path / "x")]) == 2
    assert "--max-width 30 must be a multiple of 4" in capsys.readouterr().err
    assert main(["supernet", "--k-deep", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--k-deep 3 must be between 0 and --k-random (2)" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer here
def test_sandwich_students_with_deep_draws():
    space = SearchSpace(max_depth=4, widths=(8, 12), res_inners=(8,), wide_inners=(16,))
    module = SupernetModule(space_to_dict(space), k_random=3, k_deep=2, warmup_steps=0)
    seen = []
    activate = module.supernet.set_active_subnet
    module.supernet.set_active_subnet = lambda arch: (seen.append(arch), activate(arch))[1]
    lr, hr = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    for _ in range(5):
        seen.clear()
        loss = module.training_step((lr, hr), 0)
        assert loss.ndim == 0 and loss.requires_grad
        assert seen[:2] == [space.max_arch(), space.min_arch()] and len(seen) == 5
        assert [a.depth for a in seen[3:]] == [4, 4]  # the k_deep draws are full depth
    # an old checkpoint's hyperparameters have no k_deep: it trains as before (no deep draws)
    assert SupernetModule(space_to_dict(space)).hparams.k_deep == 0
