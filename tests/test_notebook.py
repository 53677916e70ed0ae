"""notebooks/evaluate.ipynb, executed with nbclient on a hand-made run directory.

The run directory has the layout `srsearch pipeline` writes (real ``model.pt`` files of small
untrained models, the pipeline's own evaluate stage, a hand-written bench and search record):
the tiny pipeline itself takes minutes on 2 CPU cores, the notebook only reads its outputs.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from PIL import Image

from srsearch.models import build_model, preset_config
from srsearch.models.modelio import save_model
from srsearch.pipeline import STAGES, PipelineConfig, StageLog
from srsearch.search.run import write_trials_csv
from supernet.network import SuperNet
from supernet.space import make_space
from tests.conftest import ROOT, smooth_image

NOTEBOOK = ROOT / "notebooks" / "evaluate.ipynb"
BASELINES = ("espcn", "ecbsr-m4c8")


def make_run(root: Path, *, finished: bool) -> Path:
    """A pipeline run directory; ``finished=False`` stops it after the baselines stage."""
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):  # the last 16 // 8 = 2 by name are the validation split
        Image.fromarray(smooth_image(rng, 56, 64)).save(photos / f"img{i:02d}.png")
    cfg = PipelineConfig(
        data=str(photos),
        baselines=BASELINES,
        max_width=12,
        max_depth=2,
        out_size="48x32",
        budget_ms=0.5,
    )
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(0)
    space = make_space(cfg.scale, cfg.max_width, cfg.max_depth)
    arch = space.sample(random.Random(0))
    save_model(SuperNet(space).get_active_subnet(arch), run / "search" / "model.pt")
    for name in BASELINES:
        save_model(
            build_model(preset_config(name, cfg.scale)), run / "baselines" / name / "model.pt"
        )
    r = random.Random(1)
    trials = {
        stage: [
            {
                "number": i,
                "feasible": i != 2,
                "latency_ms": r.uniform(0.1, 0.6),
                "psnr": None if i == 2 else r.uniform(20, 30),
                "ssim": 0.5,
                "scored": i != 2,
                "arch": json.dumps(arch.to_dict()),
                **({"ratios": {}} if stage == "stage3" else {}),
            }
            for i in range(n)
        ]
        for stage, n in (("stage2", 6), ("stage3", 3))
    }
    write_trials_csv(run / "search" / "trials.csv", trials)
    chosen = {"latency_ms": trials["stage2"][0]["latency_ms"], "psnr": trials["stage2"][0]["psnr"]}
    (run / "search" / "summary.json").write_text(
        json.dumps({"predicted_latency_ms": 0.3, "stages": {"stage2": chosen}})
    )
    log = StageLog.load(run)
    log.mark(
        "search",
        {
            "predicted_latency_ms": 0.3,
            "psnr": 25.0,
            "ssim": 0.6,
            "search_wall_s": 1.0,
            "candidates_scored": 5,
        },
    )
    log.mark("baselines", {name: {"steps": 0} for name in BASELINES})
    if finished:
        median = {"searched": 0.25, "espcn": 0.8, "ecbsr-m4c8": 0.2}
        log.mark(
            "bench",
            {
                "fingerprint": {"name": "test host", "threads": 2},
                "models": {m: {"median_ms": ms} for m, ms in median.items()},
            },
        )
        evaluate = next(s for s in STAGES if s.name == "evaluate")
        log.mark("evaluate", evaluate.run(cfg, run))
    return run


def execute(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run the notebook on ``run`` in a python3 kernel of this interpreter."""
    kernels = tmp_path / "jupyter"
    write_kernel_spec(kernels / "kernels" / "python3")  # argv: this sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(kernels))
    monkeypatch.setenv("SRSEARCH_RUN_DIR", str(run))
    monkeypatch.setenv("SRSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the notebook's %matplotlib inline must override it
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    return nb


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def images(cell: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_notebook_shows_the_run_tables_plot_and_crops(tmp_path, monkeypatch):
    run = make_run(tmp_path, finished=True)
    nb = execute(run, tmp_path, monkeypatch)
    stages = json.loads((run / "stages.json").read_text())
    summary = json.loads((run / "notebook_summary.json").read_text())
    ((set_name, table),) = stages["evaluate"].items()
    assert list(table) == ["bicubic", "searched", *BASELINES]

    shown = text(tagged(nb, "table"))
    assert "latency (ms)" in shown
    for model, r in table.items():
        assert model in shown and f"{r['psnr']:.3f}" in shown and f"{r['ssim']:.4f}" in shown
    rows = {r["model"]: r for r in summary["tables"][set_name]}
    assert list(rows) == list(table)
    median = {m: r["median_ms"] for m, r in stages["bench"]["models"].items()}
    for model, r in table.items():
        assert rows[model]["psnr"] == pytest.approx(r["psnr"], abs=5e-4)
        assert rows[model]["ssim"] == pytest.approx(r["ssim"], abs=5e-5)
        assert rows[model]["params"] == r["params"]
        assert rows[model]["latency_ms"] == median.get(model)
    assert rows["searched"]["params"] > 0 and rows["bicubic"]["params"] == 0
    assert summary["notes"] == []

    # Pareto plot: 5 feasible stage-2 and 2 stage-3 trials, the three trained models measured
    assert images(tagged(nb, "pareto")) == 1
    pareto = summary["pareto"]
    assert (pareto["n_stage2"], pareto["n_stage3"]) == (5, 2)
    assert pareto["measured"] == {m: [median[m], table[m]["psnr"]] for m in median}

    # crop grid: both validation images; the best baseline within the 0.5 ms budget (espcn is
    # measured at 0.8 ms); whole-image PSNR and measured latency in the labels
    assert images(tagged(nb, "crops")) == 1
    assert [c["image"] for c in summary["crops"]] == ["img14", "img15"]
    per_image = json.loads(next((run / "eval").glob("searched__*.json")).read_text())
    for crop in summary["crops"]:
        panels = {p["label"]: p for p in crop["panels"]}
        assert list(panels) == ["HR", "bicubic", "ecbsr-m4c8", "searched"]
        x, y, w, h = crop["box_hr"]
        assert w == h == 2 * 28 and 0 <= x <= 64 - w and 0 <= y <= 56 - h
        row = next(r for r in per_image["images"] if r["name"] == crop["image"])
        assert panels["searched"]["psnr"] == pytest.approx(row["psnr"])
        assert panels["bicubic"]["psnr"] == pytest.approx(row["psnr_bicubic"])
        assert panels["searched"]["latency_ms"] == median["searched"]
        assert panels["ecbsr-m4c8"]["latency_ms"] == median["ecbsr-m4c8"]
        assert panels["HR"]["psnr"] is None and panels["bicubic"]["latency_ms"] is None


def test_notebook_skips_stages_that_have_not_run(tmp_path, monkeypatch):
    run = make_run(tmp_path, finished=False)
    nb = execute(run, tmp_path, monkeypatch)
    summary = json.loads((run / "notebook_summary.json").read_text())
    assert summary["stages_done"] == ["search", "baselines"]
    assert summary["tables"] == {}
    notes = " | ".join(summary["notes"])
    assert "no evaluate stage" in notes and "no bench stage" in notes
    assert "no evaluate stage" in text(tagged(nb, "table"))
    assert images(tagged(nb, "pareto")) == 1 and summary["pareto"]["measured"] == {}
    assert images(tagged(nb, "crops")) == 1  # no bench yet: a baseline by PSNR, no latency
    panels = summary["crops"][0]["panels"]
    assert [p["label"] for p in panels] == ["HR", "bicubic", BASELINES[0], "searched"]
    assert all(p["latency_ms"] is None for p in panels) and panels[3]["psnr"] > 0


def test_notebook_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    params = tagged(nb, "parameters").source
    assert 'os.environ.get("SRSEARCH_RUN_DIR"' in params and "MAX_CROPS" in params
