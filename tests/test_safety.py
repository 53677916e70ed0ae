"""A crafted checkpoint runs nothing: every command that takes a file refuses it cleanly.

The crafted files hold an object whose unpickling would create a marker file (what a real
attack would do with a shell command). Each command must exit with a user error that names the
file, must not pass on torch's advice to retry with ``weights_only=False``, and must leave the
marker uncreated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from srsearch.cli import main


class _Payload:
    """Unpickling this creates ``marker`` (os.system would do anything else as easily)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(path: Path, marker: Path, **fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {}, **fields, "x": _Payload(marker)}, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def test_crafted_file_would_run_code_without_weights_only(tmp_path, marker):
    """The probe itself: the file is a real exploit when loaded the unsafe way."""
    path = _craft(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def _refused(capsys, marker: Path, args: list[str], name: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert name in err and "refuses to unpickle" in err, err
    assert "weights_only" not in err
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt"])
def test_search_refuses_crafted_supernet(tmp_path, marker, capsys, suffix):
    evil = _craft(tmp_path / f"evil{suffix}", marker)
    lut = tmp_path / "lut.json"
    lut.write_text("{}")
    _refused(capsys, marker, ["search", "--supernet", str(evil), "--lut", str(lut),
                              "--budget-ms", "20", "--out", str(tmp_path / "run")], evil.name)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("command", ["train", "supernet"])
def test_resume_refuses_crafted_last_ckpt(tmp_path, marker, capsys, image_dir, command):
    out = tmp_path / "run"
    evil = _craft(out / "checkpoints" / "last.ckpt", marker, global_step=3)
    args = [command, "--data", str(image_dir), "--max-steps", "2", "--out", str(out),
            "--resume", "--batch-size", "2", "--lr-patch", "8"]
    if command == "train":
        args += ["--arch", "espcn"]
    _refused(capsys, marker, args, str(evil))
    assert not (out / "train_config.json").exists()


def test_eval_and_export_refuse_crafted_model(tmp_path, marker, capsys):
    evil = _craft(tmp_path / "model.pt", marker)
    _refused(capsys, marker, ["eval", str(evil), "--json", str(tmp_path / "e.json")], "model.pt")
    _refused(capsys, marker, ["export", "--tflite", str(evil), "--out",
                              str(tmp_path / "m.tflite")], "model.pt")
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "m.tflite").exists()


def test_compare_refuses_crafted_searched_model(tmp_path, marker, capsys):
    run = tmp_path / "run"
    _craft(run / "model.pt", marker)
    (run / "config.json").write_text(json.dumps({"budget_ms": 20.0, "finetune_steps": 2}))
    (run / "summary.json").write_text(json.dumps({"arch": {"scale": 2}, "lr_hw": [8, 8]}))
    _refused(capsys, marker, ["compare", "--run", str(run), "--baselines", "espcn"], "model.pt")
    assert not (run / "compare" / "espcn").exists()


def test_lightning_checkpoints_load_weights_only(tmp_path, image_dir):
    """What srsearch writes needs no unpickling of objects: its checkpoints load as plain data."""
    out = tmp_path / "run"
    assert main(["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "2",
                 "--val-every", "2", "--ckpt-every", "1", "--out", str(out), "--batch-size", "2",
                 "--lr-patch", "8"]) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["hyper_parameters"]["model_config"]["family"] == "espcn"
