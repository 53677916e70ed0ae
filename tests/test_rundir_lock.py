"""One writer per run directory: a second process is refused with the holder's PID, and a lock
left by a killed process does not block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from srsearch.cli import main
from srsearch.common.errors import UserError
from srsearch.common.rundir_lock import LOCK_NAME, file_lock, holder_pid, run_dir_lock

_HOLD = """
import sys, time
from pathlib import Path
from srsearch.common.rundir_lock import file_lock, run_dir_lock
lock = file_lock if sys.argv[2] == "file" else run_dir_lock
with lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(cli_env):
    """Start a process that holds the lock of a path; yields a function path -> Popen."""
    procs = []

    def hold(path: Path, kind: str = "dir") -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), kind], env=cli_env,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    assert holder_pid(run) == proc.pid
    with pytest.raises(UserError, match=rf"in use by another srsearch process \(PID {proc.pid}\)"):
        with run_dir_lock(run):
            pass


def test_lock_of_a_killed_process_does_not_block(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    proc.kill()
    proc.wait()
    assert (run / LOCK_NAME).is_file() and holder_pid(run) == proc.pid  # stale file stays
    with run_dir_lock(run):
        assert holder_pid(run) == os.getpid()


def test_same_process_may_nest_and_release(tmp_path):
    run = tmp_path / "run"
    with run_dir_lock(run), run_dir_lock(run):  # a pipeline stage inside the pipeline's lock
        pass
    with run_dir_lock(run):  # released: takes it again
        pass


def _train_args(image_dir: Path, out: Path) -> list[str]:
    return ["train", "--arch", "espcn", "--data", str(image_dir), "--max-steps", "2",
            "--out", str(out), "--batch-size", "2", "--lr-patch", "8"]


@pytest.mark.parametrize("command", ["train", "supernet", "pipeline", "compare"])
def test_commands_refuse_a_held_run_dir(command, tmp_path, holder, image_dir, capsys):
    run = tmp_path / "run"
    proc = holder(run if command != "compare" else run / "compare")
    args = {
        "train": _train_args(image_dir, run),
        "supernet": ["supernet", "--data", str(image_dir), "--max-steps", "2", "--out",
                     str(run), "--resume"],
        "pipeline": ["pipeline", "--run-dir", str(run)],
        "compare": ["compare", "--run", str(run)],
    }[command]
    if command == "compare":  # a finished search run
        from srsearch.models import build_model, preset_config
        from srsearch.models.modelio import save_model

        save_model(build_model(preset_config("espcn", 2)), run / "model.pt")
        (run / "config.json").write_text('{"budget_ms": 20.0, "finetune_steps": 2}')
        (run / "summary.json").write_text('{"arch": {"scale": 2}, "lr_hw": [8, 8]}')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"PID {proc.pid}" in err
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [LOCK_NAME] if command != "compare" else ["compare", "config.json", "model.pt",
                                                   "summary.json"])


def test_two_searches_on_one_run_dir(tmp_path, holder, image_dir, monkeypatch, capsys):
    """The probe: a second `search --resume` on a run dir in use is refused before it
    touches the study."""
    from srsearch.commands import search as command
    from srsearch.train.supernet_training import save_supernet
    from supernet.network import SuperNet
    from tests.test_search import BUDGET, SPACE, FakePredictor

    monkeypatch.setattr(command, "load_latency_model", lambda path: FakePredictor())
    save_supernet(SuperNet(SPACE), tmp_path / "supernet.pt")
    run = tmp_path / "run"
    proc = holder(run)
    args = ["search", "--supernet", str(tmp_path / "supernet.pt"), "--lut", "unused.json",
            "--budget-ms", str(BUDGET), "--data", str(image_dir), "--out", str(run),
            "--trials", "3", "--resume"]
    assert main(args) == 2
    assert f"PID {proc.pid}" in capsys.readouterr().err
    assert not (run / "config.json").exists() and not (run / "search.db").exists()


def test_latency_table_file_lock(tmp_path, holder):
    lut = tmp_path / "lut.json"
    proc = holder(lut, "file")
    with pytest.raises(UserError, match=f"PID {proc.pid}"):
        with file_lock(lut):
            pass
    with file_lock(tmp_path / "other.json"):  # another table in the same folder is free
        pass
