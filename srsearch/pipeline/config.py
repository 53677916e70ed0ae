"""`PipelineConfig`: the settings of `srsearch pipeline`, one flag per field."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from srsearch.common.errors import UserError
from srsearch.common.settings import build_config
from supernet.space import DEFAULT_SKIP


def _doc(default: Any, help: str) -> Any:
    """A field with its help text in ``metadata["help"]``: `srsearch pipeline` makes one flag
    per field from it (`srsearch.commands.pipeline`)."""
    return field(default=default, metadata={"help": help})


CONTEXT = "pipeline config"
# RunConfig field -> PipelineConfig field, where the names differ.
RUN_FIELDS = {"trials": "search_trials", "finetune_steps": "train_steps"}
SUPERNET_LR_PATCH = 32  # LR patch side of supernet training (as `srsearch supernet`'s default)


@dataclass(frozen=True)
class PipelineConfig:
    """The main job's settings: each field is a `srsearch pipeline` flag (``budget_ms`` is
    ``--budget-ms``) and a key of a ``--config FILE`` (TOML); flags override the file."""

    data: str = _doc("builtin", "training data: 'builtin', a folder of HR images or div2k:ROOT")
    search_data: str | None = _doc(
        None, "images the search scores and re-ranks candidates on (a data spec, every image; "
        "default: the val split of --data); give images the report is not about")
    eval_data: tuple[str, ...] = _doc(
        (), "extra evaluation sets (data specs); the val split of --data is always used"
    )
    scale: int = _doc(2, "upscaling factor: 2, 3 or 4")
    # The fixed presets nearest the default 30 ms budget on a 2-core host (ESPCN and FSRCNN-s
    # measured 60-80 ms there); the baseline stage adds the ECBSR-style net scaled to the
    # budget and the searched architecture trained from scratch. `srsearch compare` trains the
    # full set. FSRCNN exports through its exact sub-pixel form.
    baselines: tuple[str, ...] = _doc(
        ("ecbsr-m4c8", "ecbsr-m4c16"),
        "fixed hand-designed presets, each trained for supernet + fine-tune steps",
    )
    train_steps: int = _doc(1000, "fine-tune steps of the searched model")
    scaled_baseline: bool = _doc(
        True, "also train the ECBSR-style net scaled to the budget (the slowest under it, "
        "timed on the target, of the 6 the latency model puts nearest)"
    )
    from_scratch: bool = _doc(
        True, "also train the searched architecture from random init with the baselines' recipe"
    )
    batch_size: int = _doc(16, "training batch size")
    lr_patch: int = _doc(48, "LR training patch side (px)")
    supernet_steps: int = _doc(1000, "stage 1: supernet training steps")
    max_width: int = _doc(32, "search space: widest layer (multiple of 4)")
    max_depth: int = _doc(8, "search space: most cells")
    skip: str = _doc(DEFAULT_SKIP, "search space: global LR skip, nearest or bicubic")
    search_trials: int = _doc(100, "stage 2: architecture candidates")
    stage3_trials: int = _doc(20, "stage 3: pruning-ratio candidates (stage 3 leaves a "
                              "re-ranked net whole unless overshoot > 0)")
    rerank: int = _doc(8, "stage 2's best candidates fine-tuned --rerank-steps each to pick "
                       "from (0: stage 2's pick)")
    rerank_steps: int = _doc(1000, "training steps per re-ranked candidate")
    rerank_from: str = _doc("inherited", "re-rank from the supernet's weights (inherited) or "
                            "from random initialisation (scratch)")
    rerank_pool: str = _doc("best", "re-rank stage 2's best, or the best of every depth in turn "
                            "(depths)")
    rerank_family: int = _doc(2, "the ECBSR-style nets of the space with the most MACs inside "
                              "the budget, scored first by stage 2 and trained by the re-rank "
                              "beside its picks (0: off)")
    train_rep: str = _doc("none", "train the re-ranked candidates and the fine-tune as plain "
                          "convs (none) or as repvgg / ecb blocks that collapse into the same "
                          "plain net (same file and latency)")
    latency_rounds: int = _doc(
        2, "search again (predictor scaled by judged/predicted) at most this many times "
        "when the chosen net, timed on the target and judged as check_speed says, falls "
        "outside [measured_floor x budget, budget] (0: no check)")
    measured_floor: float = _doc(0.9, "lower end of that window, x budget")
    check_speed: str = _doc("session", "the latency check judges the chosen net's time "
                            "at the table's speed, read round by round off 6 nets timed "
                            "beside it (session), or as read (raw)")
    latency_runs: int = _doc(10, "benchmark runs per latency-table entry")
    latency_nets: int = _doc(20, "whole nets measured to fit the latency model's net term")
    validate_nets: int = _doc(10, "whole nets measured to validate the latency model (0: skip)")
    target: str = _doc("host", "latency target: host or adb:SERIAL")
    threads: int = _doc(2, "CPU threads on the target")
    benchmark_binary: str | None = _doc(None, "benchmark_model path on this machine, for adb")
    budget_ms: float = _doc(30.0, "latency budget (ms) at --out-size on the target")
    budget_floor: float = _doc(0.85, "search only nets predicted at >= this x budget (0: off)")
    overshoot: float = _doc(
        0.0, "stage 2 searches under (1 + this) x budget, stage 3 prunes back into it"
    )
    deploy_precision: str = _doc(
        "fp32", "fp32 or int8: what the latency table times and export ships"
    )
    out_size: str = _doc("1280x720", "output (HR) frame size WxH the latency is measured at")
    bench_runs: int = _doc(20, "runs per model in the final benchmark")
    accelerator: str = _doc("cpu", "Lightning accelerator: cpu, gpu, auto, ...")
    devices: int | str = _doc(1, "Lightning devices: a number, a list or 'auto'")
    strategy: str = _doc("auto", "Lightning strategy: auto, ddp, ...")
    precision: str = _doc("32-true", "Lightning training precision: 32-true, bf16-mixed, ...")
    seed: int = _doc(0, "random seed of training and search")

    def __post_init__(self) -> None:
        # Each value is checked by the config that owns it (RunConfig: budget, floor,
        # overshoot, trials; TrainConfig: scale, steps, batch, patch), built here so that a bad
        # value is refused before hours of training; errors name this config's keys.
        self.run_config()
        self.train_config(self.train_steps, steps_key="train_steps")
        self.train_config(self.supernet_steps, steps_key="supernet_steps",
                          lr_patch=SUPERNET_LR_PATCH)
        from srsearch.data.datasets import check_spec
        from srsearch.latency.build import PRECISIONS

        # read only after hours of training: checked (listed, not decoded) now
        if self.search_data:
            check_spec(self.search_data, self.scale, flag="search_data")
        for spec in self.eval_data:
            check_spec(spec, self.scale, flag="eval_data")

        from srcore.layers import SKIPS

        if self.skip not in SKIPS:
            raise UserError(f"pipeline config: skip {self.skip!r} must be {' or '.join(SKIPS)}")
        if self.deploy_precision not in PRECISIONS:
            raise UserError(f"pipeline config: deploy_precision {self.deploy_precision!r} must "
                            f"be {' or '.join(PRECISIONS)}")

    def run_config(self):
        """The search's `srsearch.search.run.RunConfig` (its other fields at their defaults)."""
        from srsearch.search.run import RunConfig

        return build_config(RunConfig, asdict(self), rename=RUN_FIELDS, context=CONTEXT)

    def train_config(self, steps: int, *, steps_key: str = "train_steps",
                     lr_patch: int | None = None, lr: float = 1e-3):
        """The `srsearch.train.training.TrainConfig` of a ``steps``-step training of this run
        (``steps_key``: the key that set ``steps``, named in errors)."""
        from srsearch.train.training import TrainConfig

        return build_config(TrainConfig, asdict(self), rename={"max_steps": steps_key},
                            context=CONTEXT, max_steps=steps, lr_patch=lr_patch or self.lr_patch,
                            lr=lr, val_every=max(1, steps // 4),
                            ckpt_every=max(1, min(100, steps)))

    @classmethod
    def from_toml(
        cls, path: Path | None, overrides: dict[str, Any] | None = None
    ) -> PipelineConfig:
        """The settings of TOML file ``path`` (None: the defaults), with ``overrides`` (field
        name -> value, e.g. from flags) taking precedence."""
        raw: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise UserError(f"--config {path}: no such file")
            try:
                raw = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise UserError(f"--config {path}: not valid TOML ({exc})") from exc
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise UserError(f"--config {path}: unknown keys {unknown}; known: {sorted(known)}")
        raw |= overrides or {}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
