"""What `srsearch compare` reads from a finished search run directory: its `RunConfig`, scale,
LR size, target, export precision and supernet."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srsearch.common.errors import UserError


@dataclass(frozen=True)
class RunSettings:
    """What ``compare`` reads from a search run directory."""

    run_dir: Path
    search: Any  # the run's `srsearch.search.run.RunConfig`: data, fine-tune steps, seed, ...
    scale: int
    lr_hw: tuple[int, int]
    target_id: str | None
    target: dict[str, Any] | None
    precision: str = "fp32"  # what the latency table timed, so what is exported and timed
    supernet: Path | None = None  # the supernet the run searched, when its config names it
    export_spec: dict[str, Any] | None = None  # how the latency table's nets were exported

    @classmethod
    def load(cls, run_dir: Path) -> RunSettings:
        from srsearch.search.run import RunConfig

        run_dir = Path(run_dir)
        cfg_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
        if not (run_dir / "model.pt").is_file() or not summary_path.is_file():
            raise UserError(
                f"--run {run_dir}: not a finished search run (no model.pt and summary.json); "
                "give the --out of a `srsearch search` that finished, or resume it with "
                "`srsearch search ... --resume`"
            )
        cfg = json.loads(cfg_path.read_text())
        summary = json.loads(summary_path.read_text())
        return cls(
            run_dir=run_dir,
            search=RunConfig.from_dict(cfg),
            scale=int(summary["arch"]["scale"]),
            lr_hw=tuple(summary["lr_hw"]),
            target_id=summary.get("target"),
            target=cfg.get("target_spec"),
            precision=(cfg.get("export_spec") or {}).get("precision", "fp32"),
            supernet=Path(cfg["supernet_path"]) if cfg.get("supernet_path") else None,
            export_spec=cfg.get("export_spec"),
        )

    def pruned_arch(self) -> Any:
        from supernet.space import ArchConfig

        summary = json.loads((self.run_dir / "summary.json").read_text())
        return ArchConfig.from_dict(summary["pruned_arch"])
