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

With a device (``measure``), the table's guess is not the last word on latency either: on this
host the table's whole-net errors differed from net to net (MAPE 8.8 %, largest -23 %), so a
pick predicted inside the budget window could measure well outside it, and one factor per
correction round chased those errors (docs/search.md). So stage 2's ``2 k`` best are exported
and timed first, in one interleaved ``benchmark_rounds`` call, and only those measured inside
``window`` are fine-tuned (the ``k`` best of them). When fewer than ``k`` are inside, the next
``2 k`` of the shortlist are timed in a second session (`TIMING_SESSIONS`): on session 11's
run 3 of 12 landed inside and the re-rank trained 3 where it had room for 6. When none is
inside, all ``k`` are trained, as without a device, and the search's latency check corrects
afterwards. The timings are kept in ``measured.json``, so a resumed re-rank does not time
again.

The window is applied after dividing every timing by the session's speed: the median of
measured / predicted over the shortlist (``drift``), and since session 16, when ``measure``
gives each net's rounds, round by round (`round_speeds`: each round's median over that round's
speed, then the median over rounds). The re-rank's timing is there to catch the
table's errors from net to net; the target's speed in this session is the latency check's
business. On session 10's 2-core host the median moved from 1.09 to 1.26 between two sessions
ten minutes apart (and the check read 0.82), while within one session nets spread around it
by 5-8.5 %: taken raw, the window kept 3 of 16 and then 0 of 16, and dropped every deep net;
divided by the median, 7 and 9 (docs/search.md, session 10).

Two settings change what the re-rank measures (docs/search.md, session 10). ``init="scratch"``
trains each candidate from random initialisation (the same recipe, no inherited weights): a
fine-tune from inherited weights ranks nets as the supernet left them, and on session 9's run
that put shallow nets with wide res inners first, which train worse from scratch than deep
16-wide ones; a 2000-step training from scratch ranks as 5000 steps do (Spearman 0.91 / 0.93
over 20 nets). ``pool="depths"`` draws the shortlist from every depth in turn (`candidates`),
since stage 2's inherited score put only 2-3-cell nets in its best 16 there.
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

INITS = ("inherited", "scratch")
POOLS = ("best", "depths")


def candidates(trials: Sequence[dict[str, Any]], k: int, pool: str = "best",
               first: Sequence[ArchConfig] = ()) -> list[dict[str, Any]]:
    """The ``k`` best distinct feasible, scored trials by stage-2 PSNR (best first), each with
    its ``arch`` as a dict.

    ``pool="depths"``: the best of each depth (number of cells; depths ordered by their best),
    then the second best of each, and so on, so that every depth stage 2 scored has a place
    in the shortlist however its inherited scores compare. The trials of ``first`` (the
    hand-designed family's twins, `stage2.family_twins`) lead the shortlist, in that order,
    whatever their scores."""
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: one of {POOLS}")
    seen, ranked = set(), []
    for t in sorted((t for t in trials if t["feasible"] and t["scored"] and t["psnr"] is not None),
                    key=lambda t: -t["psnr"]):
        arch = trial_arch(t)
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            ranked.append({**t, "arch": arch})
    if pool == "depths":
        by_depth: dict[int, list[dict[str, Any]]] = {}
        for t in ranked:  # dicts keep insertion order: depths by their best
            by_depth.setdefault(len(t["arch"]["cells"]), []).append(t)
        groups = list(by_depth.values())
        ranked = [g[i] for i in range(max(map(len, groups), default=0))
                  for g in groups if i < len(g)]
    if first:
        keys = [json.dumps(a.to_dict(), sort_keys=True) for a in first]
        by_key = {json.dumps(t["arch"], sort_keys=True): t for t in ranked}
        lead = [{**by_key[key], "family": True} for key in keys if key in by_key]
        ranked = lead + [t for t in ranked if json.dumps(t["arch"], sort_keys=True) not in keys]
    return [{**t, "rank_stage2": i} for i, t in enumerate(ranked[:k])]


def trial_arch(trial: dict[str, Any]) -> dict[str, Any]:
    """A stage-2 trial's ``arch`` as a dict (Optuna stores it as a JSON string)."""
    arch = trial["arch"]
    return json.loads(arch) if isinstance(arch, str) else arch


# per architecture its time: a median in ms, or its medians in every interleaved round
# (then read round by round at the shortlist's own speed, `round_speeds`)
Measure = Callable[[Sequence[ArchConfig], Path], list[float] | list[list[float]]]


def rerank(supernet: SuperNet, trials: Sequence[dict[str, Any]], k: int, train_cfg: Any,
           out: Path, log: Callable[[str], None] = print, measure: Measure | None = None,
           window: tuple[float, float] | None = None, init: str = "inherited",
           pool: str = "best", rep: str = "none", first: Sequence[ArchConfig] = ()
           ) -> dict[str, Any]:
    """Train the ``k`` best candidates (`candidates`, ``pool``) with ``train_cfg`` into
    ``out/c<i>``, from inherited weights or (``init="scratch"``) from random initialisation,
    as training form ``rep`` (`srsearch.models.subnet.REP_KINDS`); returns ``{"chosen":
    trial, "rows": [...]}`` (rows in shortlist order,
    each with its trained ``val_psnr``) and writes it to ``out/rerank.json``.

    ``measure(archs, folder) -> ms`` (or per net its ms in every round; with ``window = (lo,
    hi)`` ms) times the ``2 k`` first
    of the shortlist, and the next ``2 k`` in a second session when fewer than ``k`` measured
    in ``[lo, hi]``, and keeps the ``k`` first inside (module docstring); the result's
    ``"timed"`` lists every timed candidate, ``"drifts"`` each session's speed (``"drift"``:
    the first's). ``first``: architectures that lead the shortlist (`candidates`)."""
    from srsearch.models.subnet import subnet_config, training_form
    from srsearch.train.train_jobs import TrainJob, train_models

    if init not in INITS:
        raise ValueError(f"init {init!r}: one of {INITS}")
    timed, drift = None, None
    if measure is None:
        top = candidates(trials, k, pool, first)
    else:
        if window is None:
            raise ValueError("rerank: measure needs a window")
        timed, drifts = _timed(candidates(trials, 2 * k * TIMING_SESSIONS, pool, first), measure,
                               window, Path(out), log, batch=2 * k, want=k)
        drift = drifts[0]
        inside = [t for t in timed if t["in_window"]]
        top = (inside or timed)[:k]

    def job(arch: dict[str, Any]) -> TrainJob:
        if init == "scratch":  # random initialisation: the supernet's weights are not needed
            return TrainJob(subnet_config(arch, rep), train_cfg)
        sub = training_form(supernet.get_active_subnet(ArchConfig.from_dict(arch)).eval(), rep)
        return TrainJob(sub.config(), train_cfg, lambda: sub.state_dict())

    jobs = {f"c{i}": job(t["arch"]) for i, t in enumerate(top)}
    done = train_models(jobs, out, lambda m: log(f"[rerank] {m}"))
    rows = [{**t, "rank_shortlist": i, "val_psnr": done[f"c{i}"]["val_psnr"]}
            for i, t in enumerate(top)]
    chosen = max(rows, key=lambda r: r["val_psnr"])
    result = {"k": k, "steps": train_cfg.max_steps, "init": init, "pool": pool, "rep": rep,
              "first": [a.to_dict() for a in first],
              "chosen": chosen, "rows": rows,
              **({"timed": timed, "window_ms": list(window), "drift": drift, "drifts": drifts}
                 if timed is not None else {})}
    write_json(Path(out) / "rerank.json", result)
    how = "from scratch" if init == "scratch" else "of fine-tune"
    where = ("a twin of the hand-designed family" if chosen.get("family") else
             f"stage 2's #{chosen['rank_stage2'] + 1} in the {pool} order")
    log(f"[rerank] chose the shortlist's #{chosen['rank_shortlist'] + 1} of {len(rows)} "
        f"({where}): "
        f"{chosen['val_psnr']:.3f} dB after {train_cfg.max_steps} steps {how} (the first: "
        f"{rows[0]['val_psnr']:.3f} dB)")
    return result


TIMING_SESSIONS = 2  # sessions of 2 k nets the re-rank times at most to find k in its window


def _timed(shortlist: list[dict[str, Any]], measure: Measure, window: tuple[float, float],
           out: Path, log: Callable[[str], None], batch: int | None = None,
           want: int | None = None) -> tuple[list[dict[str, Any]], list[float]]:
    """The first ``batch`` of ``shortlist`` (all of it by default), then the next ``batch``
    while fewer than ``want`` are in the window, each with its ``measured_ms``, ``session_ms``
    (measured / its session's ``drift``, `session_drift`; read round by round at
    `round_speeds` when ``measure`` gives rounds) and ``in_window`` (``session_ms`` in
    ``window``); and each session's ``drift``. Each batch is one timing session of ``measure``
    (the target's speed moves between sessions, so each is judged at its own);
    ``out/measured.json`` keeps the sessions' timings for a resume."""
    from srsearch.common.atomic import read_json

    lo, hi = window
    batch = batch or len(shortlist)
    cache = out / "measured.json"
    saved = read_json(cache) or {}
    sessions = saved.get("sessions") or ([saved] if "archs" in saved else [])
    timed: list[dict[str, Any]] = []
    drifts: list[float] = []
    for n, start in enumerate(range(0, len(shortlist), batch)):
        if drifts and want is not None and sum(t["in_window"] for t in timed) >= want:
            break
        part = shortlist[start:start + batch]
        archs = [t["arch"] for t in part]
        if n < len(sessions) and sessions[n].get("archs") == archs:
            ms, rounds = sessions[n]["measured_ms"], sessions[n].get("round_ms")
        else:
            log(f"[rerank] timing stage 2's {'next ' if n else ''}{len(archs)} best on the "
                "device")
            got = measure([ArchConfig.from_dict(a) for a in archs],
                          out / ("timed" if n == 0 else f"timed{n}"))
            rounds = ([[float(x) for x in v] for v in got]
                      if got and not isinstance(got[0], int | float) else None)
            ms = [lower_median(r) for r in rounds] if rounds else [float(v) for v in got]
            sessions = sessions[:n] + [{"archs": archs, "measured_ms": ms,
                                        **({"round_ms": rounds} if rounds else {})}]
            write_json(cache, {"sessions": sessions})
        predicted = [t.get("latency_ms") for t in part]
        drift = session_drift(predicted, ms)
        drifts.append(drift)
        speeds = round_speeds(predicted, rounds) if rounds else []
        at = ([read_at_speeds(r, speeds) for r in rounds] if speeds
              else [m / drift for m in ms])
        timed += [{**t, "measured_ms": m, "session_ms": a, "in_window": lo <= a <= hi,
                   "session": n} for t, m, a in zip(part, ms, at, strict=True)]
        n_in = sum(t["in_window"] for t in timed[start:])
        by = (f", rounds {min(speeds):.3f}-{max(speeds):.3f}x, each read at its own"
              if len(speeds) > 1 else "")
        log(f"[rerank] the target ran {drift:.3f}x the latency model in this session (median "
            f"of {len(ms)}{by}); {n_in} of {len(part)} in [{lo:.2f}, {hi:.2f}] ms at that "
            "speed")
    if not any(t["in_window"] for t in timed):
        log("[rerank] none is in the window, so the re-rank keeps stage 2's order and the "
            "latency check corrects")
    return timed, drifts


MIN_DRIFT_NETS = 5  # fewer timed nets: their median is the nets themselves, not the session


def lower_median(values: Sequence[float]) -> float:
    """The middle value (the lower middle one for an even count), as ``benchmark_rounds``
    takes a net's median round: always one of the readings."""
    ranked = sorted(values)
    return ranked[(len(ranked) - 1) // 2]


def read_at_speeds(round_ms: Sequence[float], speeds: Sequence[float]) -> float:
    """One net's medians in every round (``round_ms``), each divided by that round's speed
    (`round_speeds`), then their `lower_median`: its time at the latency model's speed."""
    return lower_median([x / v for x, v in zip(round_ms, speeds, strict=True)])


def round_speeds(predicted: Sequence[float | None], round_ms: Sequence[Sequence[float]]
                 ) -> list[float]:
    """Per interleaved round, `session_drift` over the nets' medians in that round
    (``round_ms``: per net, its median in every round): how fast the target ran against its
    latency model in each round. Reading each net's rounds at their own speed and taking the
    median over them is steadier than one speed for the session: single rounds of single
    files run 30-50 % slow on the 2-core host (docs/search.md, sessions 15-16)."""
    n = len(round_ms[0]) if round_ms else 0
    if not n or any(len(r) != n for r in round_ms):
        return []
    return [session_drift(predicted, [r[k] for r in round_ms]) for k in range(n)]


def session_drift(predicted: Sequence[float | None], measured: Sequence[float]) -> float:
    """The median of measured / predicted ms over the nets with a positive prediction: how
    fast the target ran in this timing session against its latency model (1.0 when fewer than
    `MIN_DRIFT_NETS` have one: then the window judges the raw timings)."""
    import statistics

    ratios = [m / p for p, m in zip(predicted, measured, strict=True) if p and p > 0 and m > 0]
    return statistics.median(ratios) if len(ratios) >= MIN_DRIFT_NETS else 1.0


def apply_choice(s2: Any, chosen: dict[str, Any]) -> Any:
    """Stage 2's result with the re-ranked choice as its architecture and point."""
    return replace(s2, arch=ArchConfig.from_dict(chosen["arch"]),
                   latency_ms=chosen["latency_ms"], psnr=chosen["psnr"], ssim=chosen["ssim"])
