import csv
import json
import signal
import subprocess
import time

import pytest
import torch

from srsearch.cli import main
from srsearch.models.modelio import load_model_file
from tests.conftest import cli_cmd

TINY = ["--batch-size", "2", "--lr-patch", "8"]


def _steps_logged(run_dir, version):
    path = run_dir / "logs" / f"version_{version}" / "metrics.csv"
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_train_writes_model_logs_and_metrics(image_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--arch", "ecbsr-m4c8", "--data", str(image_dir), "--max-steps", "6",
            "--val-every", "3", "--ckpt-every", "2", "--out", str(out), *TINY]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 6
    assert 10 < summary["val_psnr"] < 60 and 0 < summary["val_ssim"] <= 1
    model, extra = load_model_file(out / "model.pt")
    assert model.config()["family"] == "ecbsr" and extra["steps"] == 6
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "logs" / "version_0").glob("events.out.tfevents*"))
    assert (out / "logs" / "version_0" / "metrics.csv").is_file()
    # a second run into the same directory must not overwrite it
    assert main(args) == 2


def _ckpt_step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_killed_run_resumes_without_losing_steps(image_dir, tmp_path, cli_env):
    out = tmp_path / "run"
    args = ["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "300",
            "--val-every", "100", "--ckpt-every", "10", "--out", str(out), *TINY]
    proc = subprocess.Popen(cli_cmd(*args), env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    killed_at = 0
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                killed_at = _ckpt_step(last)
            except Exception:  # being written
                killed_at = 0
            if killed_at >= 30:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.2)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 30 <= _ckpt_step(last) < 300
    before = _steps_logged(out, 0) if (out / "logs/version_0/metrics.csv").exists() else []

    done = subprocess.run(cli_cmd(*args, "--resume"), env=cli_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 300
    resumed = _steps_logged(out, 1)
    assert min(resumed) >= 30  # the step count continued from the checkpoint
    if before:  # what the killed run had logged is still there
        assert _steps_logged(out, 0) == before


def test_two_process_cpu_ddp(image_dir, tmp_path, cli_env):
    out = tmp_path / "ddp"
    args = ["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "4",
            "--val-every", "2", "--ckpt-every", "2", "--out", str(out), *TINY,
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    done = subprocess.run(cli_cmd(*args), env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 4 and summary["world_size"] == 2


@pytest.mark.parametrize("flag,value,msg", [("--max-steps", "0", "--max-steps 0 is invalid"),
                                            ("--lr", "-1", "--lr -1.0 is invalid"),
                                            ("--lr-warmup-steps", "3000",
                                             "--lr-warmup-steps 3000 is invalid: it must be at "
                                             "least 0 and below --max-steps (3000)")])
def test_bad_flags_are_named(image_dir, tmp_path, flag, value, msg, capsys):
    args = ["train", "--arch", "espcn", "--data", str(image_dir), "--out", str(tmp_path / "r"),
            flag, value]
    assert main(args) == 2
    assert msg in capsys.readouterr().err


class _Killed(Exception):
    """Stands in for a kill in the middle of an epoch."""


def test_resumed_run_matches_an_uninterrupted_one(image_dir, tmp_path, monkeypatch):
    """The probe: a run killed mid-epoch replayed that epoch's patches on resume and ended at
    another PSNR. Killed at step 5 (last checkpoint step 3, epochs of 4 steps) and resumed,
    it ends with the uninterrupted run's exact weights."""
    import lightning as L

    import srsearch.train.training as training

    args = ["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "8",
            "--val-every", "4", "--ckpt-every", "3", *TINY]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    class KillAt(L.Callback):
        def on_train_batch_end(self, trainer, *a) -> None:
            if trainer.global_step == 5:
                raise _Killed

    make = training.make_trainer
    monkeypatch.setattr(training, "make_trainer",
                        lambda cfg, out, callbacks=None: make(cfg, out, [KillAt()]))
    out = tmp_path / "resumed"
    with pytest.raises(_Killed):
        main([*args, "--out", str(out)])
    assert _ckpt_step(out / "checkpoints" / "last.ckpt") == 3
    monkeypatch.setattr(training, "make_trainer", make)
    assert main([*args, "--out", str(out), "--resume"]) == 0

    whole, _ = load_model_file(tmp_path / "whole" / "model.pt")
    resumed, extra = load_model_file(out / "model.pt")
    assert extra["steps"] == 8
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "whole", out)]
    assert metrics[0]["val_psnr"] == metrics[1]["val_psnr"]


def test_step_sampler_continues_mid_epoch():
    from srsearch.data.patches import StepSampler

    step = [0]
    s = StepSampler(2, 3, lambda: step[0])
    assert list(s) == [0, 1, 2, 3, 4, 5] and len(s) == 6
    step[0] = 4  # resumed at step 4: the rest of epoch 1 (steps 4 and 5)
    assert list(s) == [8, 9, 10, 11]
    ranks = [list(StepSampler(2, 1, lambda: 1, rank=r, world=2)) for r in range(2)]
    assert ranks == [[4, 5], [6, 7]]  # step 1: samples 4..7, split between the two ranks


def test_train_flags_are_the_train_config_fields():
    """`srsearch train` builds its TrainConfig from its flags by field name
    (`srsearch.common.settings.build_config`): every field has its flag, with the field's
    default."""
    import argparse
    from dataclasses import fields

    from srsearch.cli import build_parser
    from srsearch.commands._common import train_config_from_args
    from srsearch.train.training import TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    args = sub.choices["train"].parse_args(["--arch", "espcn", "--out", "x"])
    cfg = train_config_from_args(args, 1e-3)
    for f in fields(TrainConfig):
        if f.name not in ("lr", "extra"):  # lr: the preset's; extra: not a flag
            assert getattr(cfg, f.name) == f.default, f.name


def test_lr_schedule_is_the_old_cosine_without_warm_up_and_linear_during_one():
    """lr_warmup_steps=0 keeps every earlier run's schedule (CosineAnnealingLR to 0.01 x lr); a
    warm-up rises linearly to the peak, then the cosine runs over the remaining steps."""
    from srsearch.train.training import adam_cosine

    def lrs(max_steps, warmup=0, **kw):
        p = torch.nn.Parameter(torch.zeros(1))
        setup = adam_cosine([p], 2e-3, max_steps, warmup) if not kw else kw["old"](p)
        opt, sched = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        out = []
        for _ in range(max_steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    def old(p):
        opt = torch.optim.Adam([p], lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=2e-5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched}}

    assert lrs(50) == pytest.approx(lrs(50, old=old), rel=1e-6)
    warm = lrs(50, 10)
    assert warm[:10] == pytest.approx([2e-3 * (i + 1) / 10 for i in range(10)])
    assert warm[10] == pytest.approx(2e-3) and 2e-5 < warm[-1] < 2.5e-5  # 0.01 x at step 50
    assert all(a >= b for a, b in zip(warm[10:], warm[11:], strict=False))
