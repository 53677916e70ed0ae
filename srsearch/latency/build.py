"""`build_table`: measure the latency table of a search space on a target `Device`.

1. Enumerate the distinct `LayerSpec` keys of the space at the LR size (`distinct_keys`) and
   pick whole subnets whose MACs span the space (`spanning_archs`) for the fitted term.
2. Export one probe model per key (`srsearch.latency.probes`; two for adds) and the nets.
3. Time everything in ``rounds`` rounds, the nets spread between the probes; a key's entry is
   the median of its round medians, and every result is written to the table file at once.
4. Fit the whole-network term on the nets (`srsearch.latency.model.fit`).

A rerun on the same file measures only what is missing (keys, nets or rounds), so an
interrupted build resumes where it stopped. The device is passed in; nothing here builds one.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from android_bench import BenchResult, Device
from srsearch.common.errors import UserError
from srsearch.common.sizes import lr_size  # re-exported (srsearch.latency)
from srsearch.latency.lut import LatencyTable, arch_id
from srsearch.latency.model import features, fit
from srsearch.latency.probes import Probe, baseline_probe, combine, probes_for
from srsearch.latency.runner import Exporter, Job, add_net_round, interleave, load1, runner
from supernet.space import (  # distinct_keys: re-exported here and in srsearch.latency
    ArchConfig,
    LayerSpec,
    SearchSpace,
    distinct_keys,
    macs,
    prelu_plain_keys,
)

Progress = Callable[[str, int, int], None]
"""on_progress(stage, done, total); stage is "export" or "timing"."""


def spanning_archs(
    space: SearchSpace,
    n: int,
    seed: int,
    cost: Callable[[ArchConfig], float],
    exclude: Iterable[str] = (),
) -> list[ArchConfig]:
    """``n`` architectures whose costs spread evenly in log scale over the space's range.

    Uniform samples crowd the middle (most nets are mid-depth and mid-width); a latency model
    must be right for the cheapest and the dearest nets as well. A pool of random nets plus the
    space's min and max arch is drawn, and for each of ``n`` log-spaced cost targets from the
    pool's min to its max the nearest unused net is taken.

    Args:
        cost: Latency estimate used to place nets (the table sum during the build).
        exclude: `arch_id`s never to pick (e.g. the fit nets when validating).
    """
    if n <= 0:
        return []
    rng = random.Random(seed)
    banned = set(exclude)
    pool: dict[str, ArchConfig] = {}
    for arch in [space.min_arch(), space.max_arch()] + [
        space.sample(rng) for _ in range(max(40 * n, 400))
    ]:
        key = arch_id(arch.to_dict())
        if key not in banned:
            pool.setdefault(key, arch)
    archs = list(pool.values())
    log_cost = np.log(np.array([cost(a) for a in archs]))
    targets = np.linspace(log_cost.min(), log_cost.max(), min(n, len(archs)))
    used: set[int] = set()
    chosen = []
    for t in targets:
        order = np.argsort(np.abs(log_cost - t), kind="stable")
        i = next(int(j) for j in order if int(j) not in used)
        used.add(i)
        chosen.append(archs[i])
    return chosen


def table_keys(space: SearchSpace, lr_hw: tuple[int, int]) -> list[LayerSpec]:
    """Every op key a table for ``space`` measures, in order: the space's own ops
    (`distinct_keys`), then the PReLU convs of the ECBSR-style family that the scaled baseline
    is priced with (`prelu_plain_keys`)."""
    return list(dict.fromkeys([*distinct_keys(space, lr_hw), *prelu_plain_keys(space, lr_hw)]))


def build_table(
    device: Device,
    space: SearchSpace,
    path: Path,
    *,
    out_size: tuple[int, int] = (1280, 720),
    target: dict[str, Any] | None = None,
    runs: int = 6,
    warmup: int = 1,
    net_runs: int = 4,
    n_nets: int = 30,
    rounds: int = 3,
    seed: int = 0,
    batch_size: int = 8,
    channels_last_io: bool = True,
    depth_to_space: bool = True,
    precision: str = "fp32",
    exporter: Exporter | None = None,
    jobs: int = 1,
    probe_cache: Path | None = None,
    on_progress: Progress | None = None,
) -> LatencyTable:
    """Measure (or finish measuring) the latency table of ``space`` on ``device`` at ``path``.

    Args:
        device: The target; its fingerprint is stored and checked against an existing file.
        space: The search space; its scale is the table's.
        path: The table's JSON file, rewritten after every result.
        out_size: HR output (width, height).
        target: How to rebuild ``device`` later (`LatencyTable.target`).
        runs, warmup: Timed and warm-up runs per probe model and round.
        net_runs: Timed runs per whole net and round (warm-up: ``warmup``).
        n_nets: Whole nets measured for the fit.
        rounds: Passes over all models; each figure is the median of its rounds.
        seed: Seed of the fit nets' sample.
        batch_size: Fewest probes timed between two groups of nets.
        channels_last_io, depth_to_space: How whole nets are exported
        (`srsearch.deploy.tflite.convert`
            keywords, stored as the table's "export"; the defaults are `srsearch export`'s:
            NHWC I/O, the pixel shuffle as one DEPTH_TO_SPACE). Probes are always NHWC and
            time the pixel shuffle the way the nets lower it.
        precision: "fp32" or "int8": the precision the model will ship in; probes and nets
            are exported at it (int8: static quantisation as `srsearch export --precision
            int8`, calibrated on random inputs, which does not change the time).
        exporter: Writes a model file; default `srsearch.deploy.tflite.convert` (tests pass a fake).
        jobs: Processes exporting models in parallel (all exports come before any timing).
        probe_cache: Keep probe files here and reuse them (they do not depend on the device);
            `runner.probe_cache_dir(root)` names a folder per converter version.
        on_progress: Called as models are exported and timed.
    """
    path = Path(path)
    lr_hw = lr_size(out_size, space.scale)
    fresh = LatencyTable(
        fingerprint=device.fingerprint(),
        fingerprint_id=device.fingerprint_id(),
        target=target or {},
        scale=space.scale,
        out_size=tuple(out_size),
        lr_hw=lr_hw,
        export=export_settings(channels_last_io, depth_to_space, precision),
    )
    table = _resume(path, fresh)
    table.space = space.to_dict()
    table.settings = {
        "runs": runs,
        "warmup": warmup,
        "net_runs": net_runs,
        "n_nets": n_nets,
        "rounds": rounds,
        "seed": seed,
    }
    table.save(path)
    progress = on_progress or (lambda stage, done, total: None)
    archs = spanning_archs(space, n_nets, seed, lambda a: macs(a, lr_hw))

    with runner(device, exporter, jobs) as run:
        state = _Measurements(table, path, lr_hw, rounds)
        folder = Path(probe_cache) if probe_cache is not None else run.workdir
        folder.mkdir(parents=True, exist_ok=True)
        probes = [baseline_probe()] + [
            p for k in table_keys(space, lr_hw) for p in probes_for(k, depth_to_space)
        ]
        state.probes = {p.name: p for p in probes}
        popts = {"channels_last_io": True, **_precision_option(table.export)}
        if popts.get("precision"):  # the cache holds fp32 probes under their bare names
            folder = folder / popts["precision"]
            folder.mkdir(parents=True, exist_ok=True)
        pjobs = [Job(p.name, folder / f"{p.name}.tflite", p.module, p.input_shape, popts)
                 for p in probes]
        state.archs = {arch_id(a.to_dict()): a for a in archs}
        njobs = [
            net_job(a, run.workdir / f"net{i:04d}.tflite", lr_hw, table.export)
            for i, a in enumerate(archs)
        ]
        pjobs = [j for j in pjobs if state.rounds_done(j) < state.rounds_wanted(j)]
        njobs = [j for j in njobs if state.rounds_done(j) < rounds]

        exported = 0
        total = len(pjobs) + len(njobs)

        def on_exported(job: Job) -> None:
            nonlocal exported
            exported += 1
            progress("export", exported, total)

        progress("export", 0, total)
        run.export(pjobs + njobs, on_exported)
        state.total = sum(state.rounds_wanted(j) - state.rounds_done(j) for j in pjobs + njobs)
        state.progress = progress
        progress("timing", 0, state.total)
        for r in range(1, rounds + 1):
            tp = [j for j in pjobs if state.rounds_done(j) < min(r, state.rounds_wanted(j))]
            tn = [j for j in njobs if state.rounds_done(j) < r]
            for kind, part in interleave(tp, tn, batch_size):
                if kind == "a":
                    run.time(part, runs, warmup, state.record_probe)
                else:
                    run.time(part, net_runs, warmup, state.record_net)
    refit(table)
    table.save(path)
    return table


PRECISIONS = ("fp32", "int8")


def export_settings(channels_last_io: bool, depth_to_space: bool,
                    precision: str = "fp32") -> dict[str, Any]:
    """A table's "export" record (`srsearch.deploy.tflite.convert` keywords). fp32 adds no key, so
    tables built before precision was a setting still resume and compare equal."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: the latency table takes "
                        f"{' or '.join(PRECISIONS)}")
    out: dict[str, Any] = {"channels_last_io": channels_last_io, "depth_to_space": depth_to_space}
    if precision != "fp32":
        out["precision"] = precision
    return out


def _precision_option(export: Mapping[str, Any]) -> dict[str, Any]:
    return {"precision": export["precision"]} if export.get("precision") else {}


def net_job(arch: ArchConfig, path: Path, lr_hw: tuple[int, int], export: Mapping[str, Any]) -> Job:
    """A whole subnet as it ships (`SubNet`, exported with ``export``), filed by `arch_id`."""
    from supernet.subnet import SubNet

    return Job(arch_id(arch.to_dict()), path, SubNet(arch), (1, 3, *lr_hw), dict(export))


class _Measurements:
    """Files each result into the table (and saves it): probes into entries, nets into nets."""

    def __init__(self, table: LatencyTable, path: Path, lr_hw: tuple[int, int], rounds: int):
        self.table, self.path, self.lr_hw, self.rounds = table, path, lr_hw, rounds
        self.probes: dict[str, Probe] = {}
        self.archs: dict[str, ArchConfig] = {}
        # Round medians of probes whose key has no entry yet (an add with one chain timed).
        self.partial: dict[LayerSpec, dict[str, list[float]]] = {}
        self.done, self.total = 0, 0
        self.progress: Progress = lambda stage, done, total: None

    def rounds_wanted(self, job: Job) -> int:
        """The baseline is timed once; everything else ``rounds`` times."""
        probe = self.probes.get(job.id)
        return 1 if probe is not None and probe.variant == "baseline" else self.rounds

    def rounds_done(self, job: Job) -> int:
        if job.id in self.archs:
            return len(self.table.nets.get(job.id, {}).get("round_ms", []))
        probe = self.probes[job.id]
        if probe.variant == "baseline":
            return int(self.table.io_baseline_ms is not None)
        entry = self.table.entries.get(probe.key)
        if entry is None:
            return len(self.partial.get(probe.key, {}).get(probe.variant, []))
        return len(entry["probes"][probe.variant or "op"]["round_ms"])

    def record_probe(self, job: Job, result: BenchResult) -> None:
        probe = self.probes[job.id]
        if probe.variant == "baseline":
            self.table.io_baseline_ms = result.median_ms
        else:
            self._add_probe_round(probe, result)
        self._saved()

    def _add_probe_round(self, probe: Probe, result: BenchResult) -> None:
        key, variant = probe.key, probe.variant or "op"
        entry = self.table.entries.get(key)
        if entry is None:
            got = self.partial.setdefault(key, {})
            got[variant] = [*got.get(variant, []), result.median_ms]
            names = [p.variant or "op" for p in probes_for(key)]
            if not all(n in got for n in names):
                return
            entry = {"probes": {n: {"round_ms": got[n]} for n in names}}
            del self.partial[key]
        else:
            rec = entry["probes"][variant]
            rec["round_ms"] = [*rec["round_ms"], result.median_ms]
        ms = {
            ("" if n == "op" else n): statistics.median(p["round_ms"])
            for n, p in entry["probes"].items()
        }
        # A difference of two noisy times can dip below zero for the cheapest ops.
        value = max(combine(key, ms, self.table.io_baseline_ms or 0.0), 0.0)
        entry.update(
            median_ms=value,
            rounds=min(len(p["round_ms"]) for p in entry["probes"].values()),
            macs=key.macs,
            measured_at=time.time(),
            load1=load1(),
        )
        self.table.entries[key] = entry

    def record_net(self, job: Job, result: BenchResult) -> None:
        arch = self.archs[job.id]
        self.table.nets[job.id] = add_net_round(
            self.table.nets.get(job.id), arch, result, self.lr_hw
        )
        self._saved()

    def _saved(self) -> None:
        self.table.save(self.path)
        self.done += 1
        self.progress("timing", self.done, self.total)


def refit(table: LatencyTable) -> None:
    """Fit the whole-network term on all nets of the table; stores predictions per net."""
    nets = list(table.nets.values())
    rows = [features(table, ArchConfig.from_dict(n["arch"])) for n in nets]
    table.fit = fit(rows, [n["median_ms"] for n in nets])
    coef = table.fit["coef"]
    for net, row in zip(nets, rows, strict=True):
        net["lut_sum_ms"] = row["lut"]
        net["predicted_ms"] = sum(c * row[f] for f, c in coef.items())


def _resume(path: Path, fresh: LatencyTable) -> LatencyTable:
    """The table at ``path`` when it is compatible with ``fresh``, else ``fresh``."""
    if not path.exists():
        return fresh
    table = LatencyTable.load(path)
    table.check_fingerprint(fresh.fingerprint, fresh.fingerprint_id, f"latency table {path}")
    for name in ("scale", "out_size", "lr_hw", "export"):
        old, new = getattr(table, name), getattr(fresh, name)
        if old != new:
            raise UserError(
                f"latency table {path} has {name} {old} but this build asks for {new}; use "
                "another --out for these settings (or the same settings to resume)"
            )
    table.target = fresh.target or table.target
    return table
