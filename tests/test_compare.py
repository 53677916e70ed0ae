"""`srsearch compare` on a tiny search run: trains, exports, times on this host, evaluates."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from srsearch.cli import main
from srsearch.common.errors import UserError
from srsearch.comparison.compare import compare_run, count_macs, margins
from srsearch.models import build_model, preset_config
from srsearch.search import RunConfig, run_search
from supernet.network import SuperNet
from supernet.space import ArchConfig, macs
from tests.test_search import BUDGET, SPACE, FakePredictor


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
    image_dir = request.getfixturevalue("image_dir_module")
    torch.manual_seed(0)
    net = SuperNet(SPACE)
    net.reorder_channels()
    out = tmp_path_factory.mktemp("compare") / "run"
    cfg = RunConfig(
        budget_ms=BUDGET,
        data=str(image_dir),
        trials=3,
        stage3_trials=0,
        finetune_steps=2,
        batch_size=2,
        lr_patch=8,
        crop=16,
        seed=0,
    )
    run_search(net.eval(), FakePredictor(), cfg, out)
    return out, image_dir


@pytest.fixture(scope="module")
def image_dir_module(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from tests.conftest import smooth_image

    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("photos")
    for i in range(8):
        Image.fromarray(smooth_image(rng, 64, 72)).save(d / f"img{i:02d}.png")
    return d


def test_count_macs_matches_hand_counts():
    paper = build_model(preset_config("espcn-paper", 2))
    per_px = 3 * 64 * 25 + 64 * 32 * 9 + 32 * 12 * 9
    assert count_macs(paper, (10, 12)) == per_px * 120
    espcn = build_model(preset_config("espcn", 2))  # + the 1x1 skip conv 3 -> 12
    assert count_macs(espcn, (10, 12)) == (per_px + 3 * 12) * 120
    arch = SPACE.max_arch()
    subnet = build_model({"family": "subnet", "scale": 2, "arch": arch.to_dict()})
    assert count_macs(subnet, (16, 16)) == macs(arch, (16, 16))
    assert count_macs(build_model(preset_config("bicubic", 2)), (8, 8)) == 0


def test_compare_trains_measures_and_writes_one_table(run_dir, capsys):
    run, image_dir = run_dir
    result = compare_run(
        run, [str(image_dir)], baselines=("espcn", "ecbsr-m4c8"), threads=1, bench_runs=3
    )
    out = run / "compare"
    rows = result["models"]
    assert list(rows) == ["bicubic", "searched", "espcn", "ecbsr-m4c8"]
    summary = json.loads((run / "summary.json").read_text())
    searched = ArchConfig.from_dict(summary["pruned_arch"])
    assert rows["searched"]["macs"] == macs(searched, (16, 16))
    for name in ("searched", "espcn", "ecbsr-m4c8"):
        assert rows[name]["latency_ms"] > 0, name
        assert (out / "export" / f"{name}.tflite").is_file()
        assert 5 < rows[name]["psnr"][str(image_dir)] < 60
    for name in ("espcn", "ecbsr-m4c8"):  # same data and steps as the fine-tune
        assert rows[name]["trained_steps"] == 2
        train_cfg = json.loads((out / name / "train_config.json").read_text())["train"]
        assert train_cfg["data"] == str(image_dir) and train_cfg["lr_patch"] == 8
    # ecbsr is timed and counted in its collapsed form: head, 4 plain 3x3, tail, 1x1 skip
    assert rows["ecbsr-m4c8"]["macs"] == 256 * (3 * 8 * 9 + 4 * 8 * 8 * 9 + 8 * 12 * 9 + 3 * 12)
    assert rows["bicubic"]["latency_ms"] is None and rows["bicubic"]["params"] == 0
    # the search timed no anchors (no device): every row as read, and compare.md says so
    assert result["timing"] == {"speed": 1.0, "round_speeds": [], "anchors": [],
                                "anchors_ms": []}
    assert rows["espcn"]["latency_read_ms"] == rows["espcn"]["latency_ms"]
    table = (out / "compare.md").read_text()
    assert "in one interleaved session, as read (no anchors" in table
    assert "| searched |" in table and "| espcn |" in table and "searched minus" in table
    assert [r["model"] for r in csv.DictReader((out / "compare.csv").open())] == list(rows)
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # the crop grid: HR, bicubic, the best baseline within the budget (if any), searched
    assert (out / "crops.png").read_bytes()[:4] == b"\x89PNG" and "(crops.png)" in table
    crops = result["crops"]
    assert crops["best_baseline"] == result["margins"][str(image_dir)]["best_baseline"]
    labels = [p["label"] for p in crops["images"][0]["panels"]]
    assert labels == ["HR", "bicubic", *[crops["best_baseline"]] * bool(crops["best_baseline"]),
                      "searched"]
    assert json.loads((out / "compare.json").read_text())["margins"] == result["margins"]
    # a rerun trains nothing again
    mtime = (out / "espcn" / "model.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "--run",
                str(run),
                "--baselines",
                "espcn",
                "--threads",
                "1",
                "--bench-runs",
                "2",
            ]
        )
        == 0
    )
    assert (out / "espcn" / "model.pt").stat().st_mtime_ns == mtime
    printed = capsys.readouterr().out
    assert "trained (skipped)" in printed and "| espcn |" in printed


def test_margins_use_only_baselines_within_the_budget():
    rows = {
        "searched": {"latency_ms": 9.0, "psnr": {"d": 31.0}},
        "slow": {"latency_ms": 50.0, "psnr": {"d": 32.0}},
        "fast": {"latency_ms": 8.0, "psnr": {"d": 30.5}},
        "faster": {"latency_ms": 4.0, "psnr": {"d": 30.0}},
        "broken": {"latency_ms": None, "psnr": {"d": 40.0}},
    }
    m = margins(rows, ["d"], budget_ms=10.0)["d"]
    assert m["best_baseline"] == "fast" and m["margin_db"] == pytest.approx(0.5)
    assert margins(rows, ["d"], budget_ms=1.0)["d"]["best_baseline"] is None


def test_compare_md_says_how_its_latency_columns_read():
    from srsearch.comparison.compare_report import timing_words

    slow = {"timing": {"speed": 1.3, "anchors": [{}] * 6, "anchors_ms": [1.0] * 6}}
    words = timing_words(slow)
    assert "beside 6 of the search's nets" in words and "ran 1.300x its latency table" in words
    assert "as read" in timing_words({}) and "as read" in timing_words({"timing": None})


def test_compare_errors_name_the_input(tmp_path, run_dir, capsys):
    assert main(["compare", "--run", str(tmp_path)]) == 2
    assert f"--run {tmp_path}: not a finished search run" in capsys.readouterr().err
    with pytest.raises(UserError, match="--baselines: unknown \\['nope'\\]"):
        compare_run(run_dir[0], baselines=("nope",))


def _fake_stage1(out, net, steps=3, k_random=2, k_deep=1, warmup=1):
    """A supernet run directory as `srsearch supernet` leaves it (weights, training record)."""
    from srsearch.train.supernet_training import save_supernet, space_to_dict

    out.mkdir(parents=True)
    save_supernet(net, out / "supernet.pt")
    (out / "train_config.json").write_text(json.dumps({
        "space": space_to_dict(net.space), "train": {"batch_size": 2, "lr_patch": 8,
                                                     "data": "x"},
        "k_random": k_random, "k_deep": k_deep, "warmup_steps": warmup}))
    (out / "metrics.json").write_text(json.dumps({"steps": steps}))
    return out


def test_supernet_compute_counts_every_subnet_of_every_step(tmp_path):
    from srsearch.comparison.fairness import TRAIN_MAC_FACTOR, supernet_compute

    net = SuperNet(SPACE)
    d = _fake_stage1(tmp_path / "sn", net, steps=10, k_random=0, k_deep=0, warmup=4)
    c = supernet_compute(d)
    big, small = macs(SPACE.max_arch(), (8, 8)), macs(SPACE.min_arch(), (8, 8))
    # 4 warm-up steps train the largest alone, 6 train the largest and the smallest
    assert c["train_macs"] == TRAIN_MAC_FACTOR * 2 * (4 * big + 6 * (big + small))
    assert (c["steps"], c["patches_seen"], c["subnets_per_step"]) == (10, 20, 2)
    assert supernet_compute(tmp_path / "nowhere") is None


def test_margin_stats_and_scaled_ecbsr_by_hand():
    from srsearch.comparison.fairness import margin_stats, plain_arch, scaled_ecbsr

    m = margin_stats([31.0, 31.2, 31.4], [30.9, 31.0, 31.1])
    assert m["margin_db"] == pytest.approx(0.2)
    assert m["margin_sd"] == pytest.approx((0.2**2 + 0.1**2) ** 0.5)
    assert not m["significant"]  # 0.2 < 2 x 0.224
    assert margin_stats([32.0, 32.02], [31.0, 31.01])["significant"]
    assert not margin_stats([32.0], [31.0])["significant"]  # one seed: no spread known
    pred = FakePredictor()
    found = scaled_ecbsr(pred, SPACE, BUDGET)
    fits = [(pred.predict(plain_arch(2, m_, c)), m_, c) for m_ in (1, 2) for c in (8, 12)]
    best = max(f for f in fits if f[0] <= BUDGET)
    assert found["name"] == f"ecbsr-m{best[1]}c{best[2]}"
    assert found["predicted_ms"] == pytest.approx(best[0])
    assert found["config"] == {"family": "ecbsr", "scale": 2, "m": best[1],
                               "channels": best[2], "act": "prelu"}
    assert scaled_ecbsr(pred, SPACE, 0.01) is None


def test_scaled_ecbsr_with_a_device_takes_the_slowest_measured_under_the_budget():
    """The table's pick can run far from its price (29.58 ms predicted, 22.01 measured on the
    2-core host): with a device the nets nearest the budget are timed, and the slowest that
    measures under it is the scaled baseline."""
    from srsearch.comparison.fairness import N_TIMED, plain_arch, scaled_ecbsr

    pred = FakePredictor()
    table_pick = scaled_ecbsr(pred, SPACE, BUDGET)
    seen = []

    def measure(archs):  # the table's pick runs 1.5x its price, every other net 0.9x
        seen.extend(archs)
        return [pred.predict(a) * (1.5 if f"ecbsr-m{len(a.cells)}c{a.head_width}"
                                   == table_pick["name"] else 0.9) for a in archs]

    found = scaled_ecbsr(pred, SPACE, BUDGET, measure)
    assert 0 < len(seen) <= N_TIMED and all(a.act == "prelu" for a in seen)
    timed = {t["name"]: t["measured_ms"] for t in found["timed"]}
    assert timed[table_pick["name"]] > BUDGET  # measured over: not taken
    under = {n: ms for n, ms in timed.items() if ms <= BUDGET}
    assert found["name"] == max(under, key=under.get) != table_pick["name"]
    assert found["measured_ms"] == under[found["name"]] and found["chosen_by"] == "measured"
    m, c = found["config"]["m"], found["config"]["channels"]
    assert found["predicted_ms"] == pytest.approx(pred.predict(plain_arch(2, m, c)))
    # every timed net over the budget: the table's pick, said so
    slow = scaled_ecbsr(pred, SPACE, BUDGET, lambda archs: [10 * BUDGET] * len(archs))
    assert slow["name"] == table_pick["name"] and slow["chosen_by"] == "table"


def test_compare_from_scratch_seeds_scaled_and_compute(run_dir, tmp_path):
    run, image_dir = run_dir
    torch.manual_seed(0)
    net = SuperNet(SPACE)
    net.reorder_channels()
    sn = _fake_stage1(tmp_path / "sn", net)
    out = tmp_path / "cmp"
    result = compare_run(run, [str(image_dir)], baselines=("ecbsr-m4c8",), threads=1,
                         bench_runs=2, out=out, seeds=2, from_scratch=True, rep="repvgg",
                         predictor=FakePredictor(), supernet=sn)
    rows = result["models"]
    scaled = result["scaled_baseline"]["name"]
    assert list(rows) == ["bicubic", "searched", "searched-scratch", "ecbsr-m4c8", scaled]
    assert result["steps"] == 3 + 2  # the supernet's steps + the fine-tune's
    for name in ("searched-scratch", "ecbsr-m4c8", scaled):
        assert rows[name]["seeds"] == [0, 1] and rows[name]["compute"]["steps"] == 5
        assert rows[name]["trained_steps"] == 5
        assert len(rows[name]["psnr_seeds"][str(image_dir)]) == 2
        for d in (name, f"{name}-seed1"):
            assert json.loads((out / d / "train_config.json").read_text())["train"]["seed"] \
                == (0 if d == name else 1)
    scratch_cfg = json.loads((out / "searched-scratch" / "train_config.json").read_text())
    assert scratch_cfg["model"]["rep"] == "repvgg"
    # the delivered model: the run's model plus one re-fine-tune from the same inherited start
    d = rows["searched"]
    assert d["seeds"] == [0, 1] and (out / "searched-seed1" / "model.pt").is_file()
    assert d["compute"]["steps"] == 5 and d["compute"]["supernet_share"]["steps"] == 3
    assert d["compute"]["train_macs"] > d["compute"]["supernet_share"]["train_macs"] > 0
    entries = result["fair_margins"][str(image_dir)]
    assert {(e["model"], e["kind"]) for e in entries} >= {
        ("searched", "scaled to budget"), ("searched-scratch", "scaled to budget")}
    e = next(e for e in entries if e["model"] == "searched-scratch" and e["reference"] == scaled)
    assert e["margin_db"] == pytest.approx(
        rows["searched-scratch"]["psnr"][str(image_dir)] - rows[scaled]["psnr"][str(image_dir)])
    table = (out / "compare.md").read_text()
    assert "5 (3 supernet)" in table and " ± " in table and "scaled to budget" in table
    # the scaled row was chosen among nets timed on the compare's device, and is kept
    picked = result["scaled_baseline"]
    assert picked["timed"] and picked["chosen_by"] in ("measured", "table")
    assert "- Scaled baseline: " + scaled in table
    assert result["forms"] == {"delivered": "none", "scratch": "repvgg", "ecb_init": "paper"}
    assert "the from-scratch row as `repvgg`" in table
    # the same folder asked for another form is refused, not reported as that form
    with pytest.raises(UserError, match="searched-scratch holds a training with another model"):
        compare_run(run, [str(image_dir)], baselines=("ecbsr-m4c8",), threads=1, bench_runs=2,
                    out=out, seeds=2, from_scratch=True, rep="ecb", predictor=FakePredictor(),
                    supernet=sn)
    assert json.loads((out / "scaled.json").read_text())["scaled"] == picked


def test_training_compute_counts_ecb_blocks_as_the_conv_they_run_as():
    from srsearch.comparison.fairness import TRAIN_MAC_FACTOR, training_compute

    ecbsr = {"family": "ecbsr", "scale": 2, "m": 4, "channels": 8, "act": "prelu"}
    plain = {"family": "plainsr", "scale": 2, "m": 4, "channels": 8, "act": "prelu"}
    a, b = training_compute(ecbsr, 10, 4, 16), training_compute(plain, 10, 4, 16)
    per_px = 3 * 8 * 9 + 4 * 8 * 8 * 9 + 8 * 12 * 9 + 3 * 12  # head, body, tail, 1x1 skip
    assert a["train_macs"] == b["train_macs"] == per_px * 16 * 16 * 4 * TRAIN_MAC_FACTOR * 10
    assert (a["steps"], a["patches_seen"], a["lr_patch"]) == (10, 40, 16)


def test_train_only_trains_every_row_and_a_later_call_measures_them(run_dir, tmp_path):
    run, image_dir = run_dir
    out = tmp_path / "cmp"
    logs: list[str] = []
    result = compare_run(run, [str(image_dir)], baselines=("espcn",), steps=2, seeds=2,
                         out=out, train_only=True, log=logs.append, accelerator="cpu")
    assert result["trained"] == result["jobs"]
    assert {"espcn", "espcn-seed1"} <= set(result["jobs"])
    assert all((out / n / "model.pt").is_file() for n in result["jobs"])
    assert not (out / "compare.md").exists()
    logs.clear()
    compare_run(run, [str(image_dir)], baselines=("espcn",), steps=2, seeds=2, out=out,
                threads=1, bench_runs=2, log=logs.append)
    assert (out / "compare.md").is_file()
    assert not [m for m in logs if "steps, seed" in m]  # nothing trained again


def test_train_models_leaves_a_job_another_process_trains_to_it(tmp_path):
    import subprocess
    import sys

    from srsearch.common.rundir_lock import Busy
    from srsearch.train.train_jobs import TrainJob, train_models
    from srsearch.train.training import TrainConfig

    busy = tmp_path / "busy"
    busy.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|"
         "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(60)", str(busy / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig(data="builtin", max_steps=1, batch_size=1, lr_patch=8, val_every=1)
        jobs = {"busy": TrainJob(preset_config("espcn", 2), cfg)}
        with pytest.raises(Busy, match="in use by another srsearch process"):
            train_models(jobs, tmp_path, log=lambda m: None)
        logs: list[str] = []
        assert train_models(jobs, tmp_path, log=logs.append, skip_busy=True) == {}
        assert "another process is training it" in logs[-1]
    finally:
        holder.kill()
        holder.wait()


def test_train_only_on_the_target_times_the_scaled_row_and_elsewhere_takes_the_table(
        run_dir, tmp_path, monkeypatch):
    """Session 11: two `--train-only` processes on the target host took the table's pick
    (ECBSR-M1C28) where the scoring call would have timed M4C16; on the target itself a
    train-only process now times, as the scoring call does."""
    import shutil

    import srsearch.comparison.compare as compare
    from android_bench import device_from_target

    run, image_dir = run_dir
    seen = []
    monkeypatch.setattr(compare, "_pick_scaled",
                        lambda pred, r, log, out, device: seen.append(device) or None)
    here = tmp_path / "here"
    shutil.copytree(run, here)
    summary = json.loads((here / "summary.json").read_text())
    summary["target"] = device_from_target("host").fingerprint_id()
    (here / "summary.json").write_text(json.dumps(summary))
    for path in (here, run):
        compare_run(path, [str(image_dir)], baselines=("espcn",), steps=1, out=tmp_path / "o",
                    train_only=True, predictor=FakePredictor(), log=lambda m: None,
                    accelerator="cpu")
    assert seen[0] is not None and seen[0].fingerprint_id() == summary["target"]
    assert seen[1] is None  # a table built elsewhere: this is a training machine


def test_a_second_process_waits_for_the_first_ones_scaled_pick(run_dir, tmp_path):
    import subprocess
    import sys

    from srsearch.comparison.compare import SCALED_FILE, RunSettings, _scaled_baseline

    run = RunSettings.load(run_dir[0])
    out = tmp_path / "cmp"
    (out / "scaled").mkdir(parents=True)
    pick = {"name": "ecbsr-m4c16", "chosen_by": "measured"}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,json,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|"
         "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(1.5); open(sys.argv[2] + '.tmp', 'w').write(sys.argv[3]); "
         "os.replace(sys.argv[2] + '.tmp', sys.argv[2])",
         str(out / "scaled" / ".lock"), str(out / SCALED_FILE),
         json.dumps({"budget_ms": run.search.budget_ms, "scaled": pick})],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        logs: list[str] = []
        got = _scaled_baseline(FakePredictor(), run, logs.append, out, device=object())
        assert got == pick  # the holder's, not timed again here (the device is no device)
        assert "waiting for" in logs[0]
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_trained_for_another_model_or_recipe_is_refused_before_any_training(tmp_path):
    from dataclasses import asdict, replace

    from srsearch.train.train_jobs import TrainJob, train_models
    from srsearch.train.training import TrainConfig

    cfg = TrainConfig(data="builtin", max_steps=1, batch_size=1, lr_patch=8, val_every=1)
    plain = {"family": "subnet", "scale": 2, "arch": {"head_width": 8}}
    ecb = {**plain, "rep": "ecb"}
    old = tmp_path / "searched-scratch"
    old.mkdir()
    saved_train = {k: v for k, v in asdict(cfg).items() if k != "lr_warmup_steps"}  # older run
    (old / "train_config.json").write_text(json.dumps({"model": plain, "train": saved_train}))
    (old / "model.pt").write_bytes(b"")
    (old / "metrics.json").write_text(json.dumps({"steps": 1}))
    fresh = TrainJob(preset_config("espcn", 2), cfg)  # listed first: it must not start either
    with pytest.raises(UserError, match=r"searched-scratch holds a training with another model"):
        train_models({"espcn": fresh, "searched-scratch": TrainJob(ecb, cfg)}, tmp_path)
    with pytest.raises(UserError, match=r"another lr, seed than.*another --out, or delete"):
        train_models({"searched-scratch": TrainJob(plain, replace(cfg, lr=1.0, seed=3))},
                     tmp_path)
    assert not (tmp_path / "espcn").exists()
    # the same model and recipe (a field the old run lacks held its default) is reused
    done = train_models({"searched-scratch": TrainJob(plain, cfg)}, tmp_path, log=lambda m: None)
    assert done == {"searched-scratch": {"steps": 1}}


def test_ecb_init_reaches_every_ecbsr_row_and_nothing_else():
    from srsearch.comparison.compare import ecb_init_for, with_ecb_init

    ecbsr = preset_config("ecbsr-m4c16", 2)
    assert with_ecb_init(ecbsr, "paper") == ecbsr and "branch_init" not in ecbsr
    assert with_ecb_init(ecbsr, "damped") == {**ecbsr, "branch_init": "damped"}
    assert build_model(with_ecb_init(ecbsr, "damped")).config()["branch_init"] == "damped"
    espcn = preset_config("espcn", 2)
    assert with_ecb_init(espcn, "damped") == espcn
    # by default the ECBSR rows' blocks start as the searched net's do
    assert [ecb_init_for(r) for r in ("none", "repvgg", "ecb")] == ["paper", "paper", "damped"]
