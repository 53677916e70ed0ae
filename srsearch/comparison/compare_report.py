"""The tables and plot of ``srsearch compare``, and the margins they state.

Two margins per evaluation set:

- ``margins``: the delivered searched model's mean PSNR minus the best hand-designed
  baseline's among those measured at or under the budget (what earlier reports gave);
- ``fair_margins``: for each searched row (delivered; from scratch) against each reference (the
  best fixed preset measured within the budget; the ECBSR-style net scaled to the budget), the
  margin over seeds with its standard deviation and whether it is significant
  (`srsearch.comparison.fairness.margin_stats`).
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from srsearch.common import atomic
from srsearch.comparison.fairness import margin_stats

SEARCHED, SCRATCH = "searched", "searched-scratch"
_NOT_BASELINES = ("delivered", "scratch", "reference")


def _baselines(rows: Mapping[str, Mapping[str, Any]], budget_ms: float) -> list[str]:
    """Hand-designed rows measured at or under the budget."""
    return [
        n
        for n, r in rows.items()
        if n not in (SEARCHED, SCRATCH, "bicubic")
        and r.get("role") not in _NOT_BASELINES
        and r["latency_ms"] is not None
        and r["latency_ms"] <= budget_ms
    ]


def margins(
    rows: Mapping[str, Mapping[str, Any]], sets: Sequence[str], budget_ms: float
) -> dict[str, Any]:
    """Per eval set: the searched model's PSNR minus the best baseline's among those measured
    at or under the budget (None when no baseline is that fast)."""
    fast = _baselines(rows, budget_ms)
    out = {}
    for s in sets:
        if not fast:
            out[s] = {"best_baseline": None, "margin_db": None}
            continue
        best = max(fast, key=lambda n: rows[n]["psnr"][s])
        out[s] = {
            "best_baseline": best,
            "margin_db": rows[SEARCHED]["psnr"][s] - rows[best]["psnr"][s],
        }
    return out


def fair_margins(
    rows: Mapping[str, Mapping[str, Any]], sets: Sequence[str], budget_ms: float
) -> dict[str, list[dict[str, Any]]]:
    """Per eval set, one entry per (searched row, reference): the best fixed preset within the
    budget and the scaled ECBSR-style net (whatever its measured latency: it is the net the
    latency model put at the budget)."""
    presets = [n for n in _baselines(rows, budget_ms) if "preset" in rows[n].get("role", "")]
    scaled = [n for n, r in rows.items() if "scaled" in r.get("role", "")]
    searched = [n for n in (SEARCHED, SCRATCH) if n in rows]
    out: dict[str, list[dict[str, Any]]] = {}
    for s in sets:
        refs = []
        if presets:
            refs.append(("best preset within budget",
                         max(presets, key=lambda n: rows[n]["psnr"][s])))
        refs += [("scaled to budget", n) for n in scaled]
        out[s] = [
            {"model": a, "reference": b, "kind": kind,
             **margin_stats(rows[a]["psnr_seeds"][s], rows[b]["psnr_seeds"][s])}
            for a in searched for kind, b in refs
        ]
    return out


def _compute_cells(r: Mapping[str, Any]) -> list[str]:
    c = r.get("compute")
    if not c:
        return ["-", "-", "-"]
    share = c.get("supernet_share")
    steps = f"{c['steps']}" + (f" ({share['steps']} supernet)" if share else "")
    return [steps, str(c["patches_seen"]), f"{c['train_macs'] / 1e12:.1f}"]


def timing_words(result: Mapping[str, Any]) -> str:
    """How compare.md's latency columns read: at the table's speed, round by round beside the
    search's anchors (latency_ms), and as read (latency_read_ms), or as read only."""
    from srsearch.search.run import speed_words

    timing = result.get("timing") or {}
    speed, anchors = timing.get("speed", 1.0), timing.get("anchors") or []
    if speed == 1.0:
        return ("all rows in one interleaved session, as read (no anchors: not the table's "
                "target, no latency table, or fewer than 5 anchors in the search run); "
                "latency_ms and latency_read_ms are the same")
    return (f"all rows in one interleaved session beside {len(anchors)} of the search's nets, "
            f"whose times say the target ran {speed_words(timing)} its latency table: latency_ms "
            "is each row's time at the speed the search met the budget at (every round's "
            "median divided by that round's speed, then the median over rounds), and decides "
            "which baselines are within the budget; latency_read_ms is as read")


def write_tables(result: Mapping[str, Any], out: Path) -> None:
    sets = result["eval_sets"]
    head = ["model", "seeds", "latency_ms", "latency_read_ms", "params", "gmacs", "train_steps",
            "train_patches", "train_tmacs"]
    head += [f"{k}:{s}" for s in sets for k in ("psnr", "ssim")]
    body = []
    for name, r in result["models"].items():
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        if r["export_failed"] and r["latency_ms"] is None:
            lat = "not convertible"
        # as read (rows from before anchors were timed have only that)
        read = r.get("latency_read_ms", r["latency_ms"])
        read = "-" if read is None else f"{read:.2f}"
        psnr = []
        for s in sets:
            vals = r.get("psnr_seeds", {}).get(s) or [r["psnr"][s]]
            sd = statistics.stdev(vals) if len(vals) > 1 else None
            psnr += [f"{r['psnr'][s]:.3f}" + (f" ± {sd:.3f}" if sd is not None else ""),
                     f"{r['ssim'][s]:.4f}"]
        n_seeds = str(len(r["seeds"])) if r.get("seeds") else "-"
        body.append([name, n_seeds, lat, read, str(r["params"]), f"{r['macs'] / 1e9:.2f}",
                     *_compute_cells(r), *psnr])
    with (out / "compare.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(body)
    h, w_ = result["lr_hw"]
    sn = result.get("supernet")
    inherit = (f"The delivered model (`searched`) inherited the weights of a supernet trained "
               f"{sn['steps']} steps ({sn['subnets_per_step']} subnets per step, LR patch "
               f"{sn['lr_patch']}) and was fine-tuned {result['finetune_steps']} steps; its "
               "training columns count both. " if sn else
               "The delivered model (`searched`) inherited supernet weights whose training "
               "record was not found: its training columns count the fine-tune only, so it "
               "had more training than they say. ")
    forms = result.get("forms")
    forms_line = (f"Training forms: the delivered model fine-tuned as `{forms['delivered']}`, "
                  f"the from-scratch row as `{forms['scratch']}` (blocks collapsed into the "
                  f"same plain net for export), ECBSR's ECB branches started "
                  f"`{forms['ecb_init']}`. " if forms else "")
    lines = [
        f"# srsearch compare: {result['run']}",
        "",
        f"x{result['scale']}, LR input {w_}x{h}; every model trained here ran {result['steps']} "
        f"steps on `{result['data']}` with the run's batch and patch, seeds "
        f"{', '.join(map(str, result.get('seeds') or []))}. {inherit}{forms_line}"
        "Training MACs = forward MACs of the training form at the patch size x batch x 3, "
        "summed over steps. Latency: "
        f"median on {result['device']}, {result['precision']} files, {timing_words(result)}; "
        "Y-PSNR (dB, mean ± std "
        "over seeds) / SSIM of the PyTorch models, shave = scale.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append("")
    for s, m in result["margins"].items():
        if m["best_baseline"] is None:
            lines.append(f"- {s}: no baseline measured at or under {result['budget_ms']:g} ms.")
        else:
            lines.append(
                f"- {s}: searched minus the best baseline at or under "
                f"{result['budget_ms']:g} ms ({m['best_baseline']}): "
                f"{m['margin_db']:+.3f} dB."
            )
    for s, entries in (result.get("fair_margins") or {}).items():
        for e in entries:
            verdict = "significant" if e["significant"] else "not significant"
            lines.append(
                f"- {s}: {e['model']} minus {e['reference']} ({e['kind']}): "
                f"{e['margin_db']:+.3f} ± {e['margin_sd']:.3f} dB ({verdict}: "
                "significant means above two standard deviations, with 2+ seeds each)."
            )
    line = scaled_line(result.get("scaled_baseline"), result["budget_ms"])
    if line:
        lines.append(line)
    lines.append("")
    lines += (result.get("crops") or {}).get("markdown", [])
    atomic.write_text(out / "compare.md", "\n".join(lines))


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["eval_sets"][0]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in result["models"].items():
        if r["latency_ms"] is None:
            continue
        searched = name == SEARCHED
        ax.scatter(
            r["latency_ms"],
            r["psnr"][s],
            marker="*" if searched else "s",
            s=150 if searched else 40,
            c="tab:red" if searched else "tab:blue",
            zorder=3,
        )
        ax.annotate(
            name,
            (r["latency_ms"], r["psnr"][s]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.axhline(result["models"]["bicubic"]["psnr"][s], c="0.5", ls=":", lw=1, label="bicubic")
    ax.axvline(
        result["budget_ms"], c="tab:red", ls="--", lw=1, label=f"budget {result['budget_ms']:g} ms"
    )
    ax.set_xlabel(f"measured latency (ms), {result['device']}")
    ax.set_ylabel(f"Y-PSNR on {s} (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scaled_line(scaled: Mapping[str, Any] | None, budget_ms: float) -> str | None:
    """How the ECBSR-style row was scaled to the budget: by measurement or by the table."""
    if not scaled:
        return None
    if scaled.get("chosen_by") == "measured":
        timed = ", ".join(f"{t['name']} {t['measured_ms']:.2f}" for t in scaled["timed"])
        return (f"- Scaled baseline: {scaled['name']}, the slowest of the ECBSR-style nets the "
                f"latency table puts nearest {budget_ms:g} ms that measured under it (ms: "
                f"{timed}).")
    how = ("every net timed ran over the budget, so the table's pick"
           if "timed" in scaled else "the table's pick, not timed before training")
    return (f"- Scaled baseline: {scaled['name']}, predicted {scaled['predicted_ms']:.2f} ms "
            f"({how}).")
