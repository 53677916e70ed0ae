"""The pipeline's last stage: ``report.md``, its PSNR-latency plot and crops, and the
training compute of every model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from srsearch.pipeline.config import PipelineConfig
from srsearch.pipeline.stages import StageLog, _models, baseline_steps, latency_warning


def _compute_rows(cfg: PipelineConfig, run_dir: Path, names: list[str]) -> dict[str, Any]:
    """Training compute of each trained model (`srsearch.comparison.fairness`); the searched model's
    includes its supernet's share."""
    from srsearch.comparison.fairness import (
        delivered_compute,
        supernet_compute,
        training_compute,
    )
    from srsearch.models.modelio import load_model_file

    rows: dict[str, Any] = {}
    for name, path in _models(cfg, run_dir).items():
        if name not in names or not path.is_file():
            continue
        model_cfg = json.loads((path.parent / "train_config.json").read_text())["model"] \
            if name != "searched" else load_model_file(path)[0].config()
        if name == "searched":
            rows[name] = delivered_compute(supernet_compute(run_dir / "supernet"), model_cfg,
                                           cfg.train_steps, cfg.batch_size, cfg.lr_patch)
        else:
            rows[name] = training_compute(model_cfg, baseline_steps(cfg), cfg.batch_size,
                                          cfg.lr_patch)
    return rows


def _report(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = StageLog.load(run_dir).done
    table, bench = done["evaluate"], done.get("bench", {}).get("models", {})
    # judged at the latency table's speed (the speed the search met the budget at); a bench
    # from before anchors has none: as read
    lat = {name: r.get("table_speed_ms", r["median_ms"]) for name, r in bench.items()}
    read = {name: r["median_ms"] for name, r in bench.items()}
    base = done.get("baselines") or {}
    compute = _compute_rows(cfg, run_dir, list(next(iter(table.values()))))
    sn = (compute.get("searched") or {}).get("supernet_share")
    lines = [
        f"# srsearch report: {run_dir.name}",
        "",
        f"Data `{cfg.data}`, x{cfg.scale}, target `{cfg.target}` ({cfg.threads} threads), "
        f"budget {cfg.budget_ms:g} ms at {cfg.out_size} output, seed {cfg.seed} (one seed per "
        "model: margins under about 0.3 dB are within the spread between seeds measured in "
        "docs/search.md; `srsearch compare --seeds N` gives them a spread). Training: the "
        f"searched model inherited the weights of a supernet trained {cfg.supernet_steps} "
        f"steps ({sn['subnets_per_step'] if sn else '?'} subnets per step) and was fine-tuned "
        f"{cfg.train_steps} steps"
        + (f" as {cfg.train_rep} blocks collapsed into the plain net it delivers"
           if cfg.train_rep != "none" else "")
        + "; every other model trained "
        f"{base.get('steps', cfg.train_steps)} steps from random initialisation, so all had "
        "the same steps and images (columns below; training MACs = forward MACs of the "
        "training form at the patch size x batch x 3). "
        + ((f"`{base['scaled']}` is the ECBSR-style net scaled to the budget: the slowest "
            "measured under it of those the latency model puts nearest it. "
            if base.get("scaled_by") == "measured" else
            f"`{base['scaled']}` is the ECBSR-style net the latency model puts closest under "
            "the budget. ") if base.get("scaled") else "")
        + ("`searched-scratch` is the searched architecture trained from scratch with the "
           "baselines' recipe"
           + (f" (as {cfg.train_rep} blocks)" if cfg.train_rep != "none" else "") + ". "
           if "searched-scratch" in compute else "")
        + ("ECBSR rows' ECB blocks started as the searched net's (damped). "
           if cfg.train_rep == "ecb" else "")
        + "Params and GMACs are those of the exported (inference) form at the LR input; "
        "latency is the median on the target." + bench_line(done.get("bench") or {}),
        "",
    ]
    if "search" in done:
        s = done["search"]
        from srsearch.search.run import chosen_dir

        rerank = chosen_dir(run_dir / "search") / "rerank" / "rerank.json"
        rr = ""
        if rerank.is_file():
            r = json.loads(rerank.read_text())
            how = ("training from scratch" if r.get("init") == "scratch"
                   else "fine-tune")
            which = ("the best of each depth" if r.get("pool") == "depths"
                     else "stage 2's best")
            # rank_shortlist: its place among the trained; runs before it called it rank_stage2
            kept = r["chosen"].get("rank_shortlist", r["chosen"].get("rank_stage2", 0))
            rr = (f" Re-ranked {which} ({len(r['rows'])}) by a {r['steps']}-step {how}: "
                  f"kept #{kept + 1} ({r['chosen']['val_psnr']:.3f} dB "
                  f"against the first's {r['rows'][0]['val_psnr']:.3f}).")
        lines += [
            f"Search: {s['candidates_scored']} candidates scored in "
            f"{s['search_wall_s']:.0f} s; predicted latency "
            f"{s['predicted_latency_ms']:.2f} ms.{rr}{latency_check_line(s.get('latency_check'))}"
            f"{search_images_line(cfg)}",
            "",
        ]
    if "latency" in done and "mape_pct" in done["latency"]:
        v = done["latency"]
        lines += [
            f"Latency model: MAPE {v['mape_pct']:.1f} %, largest error "
            f"{v['max_error_pct']:+.1f} %, Spearman {v['spearman']:.3f} on "
            f"{cfg.validate_nets} nets measured end to end.",
            "",
        ]
        warning = latency_warning(v["mape_pct"], cfg.validate_nets)
        if warning:
            lines += [f"**Warning:** {warning}", ""]
    for set_name, rows in table.items():
        lines += [
            f"## {set_name} (Y-PSNR / SSIM, shave {cfg.scale})",
            "",
            "| model | PSNR (dB) | SSIM | measured latency (ms) | params | GMACs | train steps "
            "| train patches | train TMACs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, r in rows.items():
            ms = "-" if m not in lat else f"{lat[m]:.2f}" + (
                f" ({read[m]:.2f})" if read[m] != lat[m] else "")
            c = compute.get(m)
            steps = "-" if not c else f"{c['steps']}" + (
                f" ({c['supernet_share']['steps']} supernet)" if c.get("supernet_share") else "")
            cells = "- | - " if not c else f"{c['patches_seen']} | {c['train_macs'] / 1e12:.1f} "
            lines.append(f"| {m} | {r['psnr']:.3f} | {r['ssim']:.4f} | {ms} | {r['params']} | "
                         f"{r.get('gmacs', float('nan')):.2f} | {steps} | {cells}|")
        lines.append("")
    set_name, rows = next(iter(table.items()))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in rows.items():
        if name in lat:
            ax.scatter(lat[name], r["psnr"], color="tab:red" if name == "searched" else "tab:blue")
            ax.annotate(name, (lat[name], r["psnr"]), fontsize=8)
    ax.axvline(cfg.budget_ms, color="gray", linestyle="--", label="budget")
    ax.set_xlabel(f"measured latency on {cfg.target} (ms, {cfg.out_size}"
                  + (", at the latency table's speed)" if lat != read else ")"))
    ax.set_ylabel("Y-PSNR (dB)")
    ax.set_title(f"{set_name}, x{cfg.scale}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "psnr_latency.png", dpi=120)
    plt.close(fig)
    lines += ["![PSNR against measured latency](psnr_latency.png)", ""]
    lines += _crops(cfg, run_dir, next(iter(table.values())), lat)
    if (run_dir / "search" / "pareto.png").is_file():
        lines += ["![Search: PSNR against predicted latency](search/pareto.png)", ""]
    lines += ["Config:", "", "```json", json.dumps(asdict(cfg), indent=2), "```", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return {"report": str(run_dir / "report.md")}


def _crops(cfg: PipelineConfig, run_dir: Path, rows: dict[str, Any],
           lat: dict[str, float]) -> list[str]:
    """crops.png (`srsearch.evaluation.grid`) of two validation images; the report's lines for
    it."""
    from srsearch.comparison.compare import inference_models
    from srsearch.data.datasets import load_images
    from srsearch.evaluation.grid import report_grid

    models = inference_models(_models(cfg, run_dir), cfg.scale)
    # the from-scratch row is the searched architecture, not a baseline
    psnr = {name: r["psnr"] for name, r in rows.items() if name != "searched-scratch"}
    return report_grid(load_images(cfg.data, cfg.scale, "val"), models, psnr, lat,
                       cfg.budget_ms, cfg.scale, run_dir / "crops.png")["markdown"]


def bench_line(bench: dict) -> str:
    """How the bench stage's times read: at the latency table's speed (with the anchors the
    session was measured against) or as read."""
    from srsearch.search.run import speed_words

    speed, anchors = bench.get("speed", 1.0), bench.get("anchors") or []
    if not bench:
        return ""
    if speed == 1.0:
        return (" Every file was timed in one interleaved session, as read (the search left "
                f"{len(anchors)} anchor nets, under the 5 needed to read the session's speed "
                "against the latency table).")
    return (f" Every file was timed in one interleaved session beside {len(anchors)} of the "
            "search's nets (its final anchors, whose latency the table predicts); the target "
            f"ran {speed_words(bench)} its latency table in that session, so the latency column "
            "is each file's time at the speed the search met the budget at (every round's "
            "median divided by that round's speed, then the median over rounds; as read in "
            "brackets: on a host whose speed drifts, those can sit on either side of the "
            "budget).")


def latency_check_line(check: dict | None) -> str:
    """The search's latency check in one sentence (empty when it did not run)."""
    if not check or not check.get("rounds"):
        return ""
    lo, hi = check["window_ms"]
    times = ", ".join(f"{r['measured_ms']:.2f}" for r in check["rounds"])
    if len(check["rounds"]) == 1:
        head = f" Latency check: the chosen net measured {times} ms on the target"
    else:
        head = (f" Latency check: measured {times} ms in {len(check['rounds'])} rounds (each "
                "after searching again with the latency model scaled by the previous round's "
                "measured/predicted ratio)")
    verdict = ("within" if check["in_window"] else "**outside**")
    judged = [r.get("judged_ms", r["measured_ms"]) for r in check["rounds"]]
    if check.get("speed") == "session" and judged != [r["measured_ms"] for r in check["rounds"]]:
        from srsearch.search.run import speed_words

        speeds = ", ".join(speed_words(r) for r in check["rounds"])
        by = (", each round read at its own speed"
              if any(len(r.get("round_speeds") or []) > 1 for r in check["rounds"]) else "")
        head += (f", {', '.join(f'{j:.2f}' for j in judged)} ms at the latency table's speed "
                 f"(the target ran {speeds} its table beside the nets timed with it{by})")
    return (f"{head}, {verdict} [{lo:.2f}, {hi:.2f}] ms; kept round {check['accepted']}."
            + (f" ({check['note']})" if check.get("note") else ""))


def search_images_line(cfg) -> str:
    """Which images chose the searched net, and so which table below it may flatter."""
    if cfg.search_data:
        return (f" Candidates were scored and re-ranked on `{cfg.search_data}`, which no table "
                "below reports on.")
    return (f" Candidates were scored and re-ranked on `{cfg.data}`'s val split, the first "
            "table below: the choice favours the searched row there (give `--search-data` "
            "images you do not report on); the `--eval-data` sets played no part in it.")
