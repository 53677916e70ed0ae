"""Re-ranking stage 2's best candidates by a short fine-tune from their inherited weights.

Stage 2 ranks thousands of candidates by PSNR with inherited supernet weights on small crops.
That score ranks the space well overall (docs/search.md, Spearman 0.93 over 20 subnets), but
near the budget the best candidates sit within a few hundredths of a dB of each other, below
what it resolves: on the session-7 run, the top ten were within 0.05 dB, and a 1000-step
fine-tune of each put stage 2's pick seventh. `rerank` fine-tunes the ``k`` best distinct
feasible candidates for ``steps`` steps each (the search's own fine-tune recipe), scores them
on the val split (whole images) and returns the best; each candidate's run is kept under
``out``, so an interrupted rerank resumes. The choice and every candidate's figures go to
``rerank.json`` beside ``arch.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from srsearch.common.atomic import write_json
from supernet.network import SuperNet
from supernet.space import ArchConfig


def candidates(trials: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct feasible, scored trials by stage-2 PSNR (best first), each with
    its ``arch`` as a dict."""
    seen, out = set(), []
    for t in sorted((t for t in trials if t["feasible"] and t["scored"] and t["psnr"] is not None),
                    key=lambda t: -t["psnr"]):
        arch = json.loads(t["arch"]) if isinstance(t["arch"], str) else t["arch"]  # Optuna: str
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({**t, "arch": arch})
        if len(out) == k:
            break
    return out


def rerank(supernet: SuperNet, trials: Sequence[dict[str, Any]], k: int, train_cfg: Any,
           out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune the ``k`` best candidates (`candidates`) with ``train_cfg`` from inherited
    weights into ``out/c<i>``; returns ``{"chosen": trial, "rows": [...]}`` (rows in stage-2
    order, each with its fine-tuned ``val_psnr``) and writes it to ``out/rerank.json``."""
    from srsearch.train.train_jobs import TrainJob, train_models

    top = candidates(trials, k)

    def job(arch: dict[str, Any]) -> TrainJob:
        sub = supernet.get_active_subnet(ArchConfig.from_dict(arch)).eval()
        return TrainJob(sub.config(), train_cfg, lambda: sub.state_dict())

    jobs = {f"c{i}": job(t["arch"]) for i, t in enumerate(top)}
    done = train_models(jobs, out, lambda m: log(f"[rerank] {m}"))
    rows = [{**t, "rank_stage2": i, "val_psnr": done[f"c{i}"]["val_psnr"]}
            for i, t in enumerate(top)]
    chosen = max(rows, key=lambda r: r["val_psnr"])
    result = {"k": k, "steps": train_cfg.max_steps, "chosen": chosen, "rows": rows}
    write_json(Path(out) / "rerank.json", result)
    log(f"[rerank] chose stage 2's #{chosen['rank_stage2'] + 1} of {len(rows)}: "
        f"{chosen['val_psnr']:.3f} dB after {train_cfg.max_steps} steps (stage 2's pick: "
        f"{rows[0]['val_psnr']:.3f} dB)")
    return result


def apply_choice(s2: Any, chosen: dict[str, Any]) -> Any:
    """Stage 2's result with the re-ranked choice as its architecture and point."""
    return replace(s2, arch=ArchConfig.from_dict(chosen["arch"]),
                   latency_ms=chosen["latency_ms"], psnr=chosen["psnr"], ssim=chosen["ssim"])
