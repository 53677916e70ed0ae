"""Output paths that cannot be written are user errors naming the path, raised before any work.

Tests run as root here, where a chmod-ed folder stays writable, so the unwritable cases are a
path under a regular file (NotADirectory) and an existing file or folder where the other is
needed; the permission case runs only for other users.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from srsearch.cli import main
from srsearch.common.errors import UserError
from srsearch.common.outpaths import check_out_file, prepare_out_dir


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    p = tmp_path / "afile"
    p.write_text("not a folder")
    return p


def test_prepare_out_dir(tmp_path, afile):
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    with pytest.raises(UserError, match=rf"--out {afile} is a file, not a folder"):
        prepare_out_dir(afile)
    with pytest.raises(UserError, match=rf"{afile} is a file, so no folder can be made"):
        prepare_out_dir(afile / "sub" / "run")
    assert afile.read_text() == "not a folder"


def test_check_out_file(tmp_path, afile):
    assert check_out_file(tmp_path / "new" / "x.json") == tmp_path / "new" / "x.json"
    check_out_file(afile)  # an existing file is replaced later
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_out_file(tmp_path)
    with pytest.raises(UserError, match=rf"--json {afile}/x.json: {afile} is a file, so no"):
        check_out_file(afile / "x.json", "--json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            prepare_out_dir(ro)
        with pytest.raises(UserError, match="not writable"):
            check_out_file(ro / "x.json")
    finally:
        ro.chmod(0o700)


def _tiny(image_dir: Path) -> list[str]:
    return ["--data", str(image_dir), "--max-steps", "2", "--batch-size", "2", "--lr-patch", "8"]


@pytest.mark.parametrize("where", ["file", "under_file"])
@pytest.mark.parametrize("command", ["train", "supernet", "pipeline", "latency"])
def test_commands_name_an_unwritable_out(command, where, afile, image_dir, capsys):
    out = afile if where == "file" else afile / "run"
    flag = "--run-dir" if command == "pipeline" else "--out"
    args = {
        "train": ["train", "--arch", "espcn", *_tiny(image_dir), "--out", str(out)],
        "supernet": ["supernet", *_tiny(image_dir), "--out", str(out)],
        "pipeline": ["pipeline", "--run-dir", str(out)],
        "latency": ["latency", "build", "--out", str(out / "lut.json") if where == "file"
                    else str(out)],
    }[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert flag in err and str(afile) in err and "Traceback" not in err
    assert afile.read_text() == "not a folder"


def test_search_names_an_unwritable_out(afile, image_dir, tmp_path, monkeypatch, capsys):
    from srsearch.commands import search as command
    from srsearch.train.supernet_training import save_supernet
    from supernet.network import SuperNet
    from tests.test_search import BUDGET, SPACE, FakePredictor

    monkeypatch.setattr(command, "load_latency_model", lambda path: FakePredictor())
    save_supernet(SuperNet(SPACE), tmp_path / "supernet.pt")
    assert main(["search", "--supernet", str(tmp_path / "supernet.pt"), "--lut", "x.json",
                 "--budget-ms", str(BUDGET), "--data", str(image_dir), "--out",
                 str(afile / "run")]) == 2
    assert f"--out {afile / 'run'}: {afile} is a file" in capsys.readouterr().err


def test_eval_json_checked_before_the_evaluation(afile, image_dir, tmp_path, monkeypatch,
                                                 capsys):
    import srsearch.evaluation.evaluate

    def never(*a, **k):
        raise AssertionError("evaluated although the output cannot be written")

    monkeypatch.setattr(srsearch.evaluation.evaluate, "evaluate", never)
    for bad, says in ((afile / "x.json", "is a file, so no file"),
                      (tmp_path, "is a folder; give a file name")):
        assert main(["eval", "bicubic", "--data", str(image_dir), "--json", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "--json" in err and says in err


def test_export_names_the_out_path_not_the_model(afile, tmp_path, capsys):
    for bad, says in ((afile / "m.tflite", f"{afile} is a file"),
                      (tmp_path, "give a path ending in .tflite")):
        assert main(["export", "--tflite", "espcn", "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert says in err and "model" not in err.split(says)[0].split("error:")[-1]
    (tmp_path / "d.tflite").mkdir()
    assert main(["export", "--tflite", "espcn", "--out", str(tmp_path / "d.tflite")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_compare_names_an_unwritable_out(afile, tmp_path, capsys):
    from srsearch.models import build_model, preset_config
    from srsearch.models.modelio import save_model

    run = tmp_path / "run"
    save_model(build_model(preset_config("espcn", 2)), run / "model.pt")
    (run / "config.json").write_text('{"budget_ms": 20.0, "finetune_steps": 2}')
    (run / "summary.json").write_text('{"arch": {"scale": 2}, "lr_hw": [8, 8]}')
    assert main(["compare", "--run", str(run), "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
