"""Where latency departs from MACs on the host (LiteRT + XNNPACK): the figures of docs/latency.md.

    python benchmarks/latency_vs_macs.py [--threads 2] [--rounds 3] [--lut lut.json]

Every model is exported with `srsearch.deploy.tflite.convert` (NHWC I/O, like the latency table's
probes) at LR 640x360 (x2 to 1280x720) and timed with `HostDevice(isolate=False)` in
``--rounds`` round-robin passes; a model's figure is the median of its per-pass medians, which
evens out load that comes and goes on a shared machine. Sections:

- widths: GMAC/s of w->w 3x3 and 1x1 convs for w = 4..64 and off-grid widths (6, 10, 14, ...);
- cin/cout: 3x3 convs 32->c and c->32 (the cost is not symmetric in in/out channels);
- ops: add, skip, pixel shuffle, 1x1 vs 3x3, FSRCNN's 9x9 transposed conv, against MACs;
- isolate: in-process vs one-process-per-model timing (`HostDevice(isolate=...)`);
- drift: one model timed every 5 s, to show how much a shared machine's speed moves;
- with --lut: the table's entries against MACs, and predicted vs measured whole nets (fit nets
  and, when lut.validate.json exists, the validation nets).

Prints every figure and the machine; saves PNGs under --img (default docs/img).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from android_bench import HostDevice  # noqa: E402
from srcore.layers import LRSkip  # noqa: E402
from srsearch.deploy import tflite  # noqa: E402
from srsearch.latency.probes import AddChain, ConvProbe, DepthToSpaceProbe  # noqa: E402
from supernet.space import LayerSpec  # noqa: E402

H, W = 360, 640
ON_GRID = list(range(4, 65, 4))
OFF_GRID = [6, 10, 14, 18, 22, 26, 30]
ROOT = Path(__file__).resolve().parents[1]


def conv(cin: int, cout: int, k: int, act: str | None = None) -> tuple[nn.Module, int, int]:
    """(module, input channels, MACs)."""
    spec = LayerSpec("conv", cin, cout, k, H, W, act)
    return ConvProbe(spec), cin, spec.macs


def models() -> dict[str, dict[str, tuple[nn.Module, int, int]]]:
    """{section: {name: (module, input channels, MACs)}}."""
    widths = {}
    for w in sorted(ON_GRID + OFF_GRID):
        widths[f"3x3 {w}->{w}"] = conv(w, w, 3)
        widths[f"1x1 {w}->{w}"] = conv(w, w, 1)
    cin_cout = {}
    for c in range(8, 49, 4):
        cin_cout[f"3x3 32->{c}"] = conv(32, c, 3)
        cin_cout[f"3x3 {c}->32"] = conv(c, 32, 3)
    # FSRCNN's own deconv (padding 4, output_padding 1) does not convert with litert-torch 0.10
    # (docs/export.md); padding 0 does (TRANSPOSE_CONV, 'VALID'), same MACs, 7 more output rows.
    deconv = nn.ConvTranspose2d(56, 3, 9, stride=2)
    deconv_s = nn.ConvTranspose2d(32, 3, 9, stride=2)
    ops = {
        "3x3 32->32": conv(32, 32, 3),
        "1x1 32->32": conv(32, 32, 1),
        "3x3 16->16": conv(16, 16, 3),
        "3x3 16->16 + ReLU": conv(16, 16, 3, "relu"),
        "3x3 12->12": conv(12, 12, 3),
        "3x3 12->12 + ReLU": conv(12, 12, 3, "relu"),
        "add 32 (x1 chain)": (AddChain(1), 32, 0),
        f"add 32 (x{5} chain)": (AddChain(5), 32, 0),
        "skip 3->12 (1x1)": (LRSkip(2), 3, 3 * 12 * H * W),
        "pixel shuffle 12->3 (RESHAPE/TRANSPOSE)": (nn.PixelShuffle(2), 12, 0),
        "pixel shuffle 12->3 (DEPTH_TO_SPACE)": (DepthToSpaceProbe(2), 12, 0),
        "FSRCNN deconv 9x9 56->3 s2": (deconv, 56, 56 * 3 * 81 * H * W),
        "FSRCNN-s deconv 9x9 32->3 s2": (deconv_s, 32, 32 * 3 * 81 * H * W),
    }
    return {"widths": widths, "cin/cout": cin_cout, "ops": ops}


def export_all(sec: dict[str, dict], workdir: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    files: dict[str, Path] = {}
    for name, (module, cin, _) in ((n, m) for s in sec.values() for n, m in s.items()):
        if name in files:  # the same model in two sections
            continue
        f = workdir / f"{len(files):03d}.tflite"
        tflite.convert(module, (1, cin, H, W), f, channels_last_io=True, check=False)
        files[name] = f
    return files


def time_rounds(device: HostDevice, files: dict[str, Path], runs: int, rounds: int) -> dict:
    per: dict[str, list[float]] = {n: [] for n in files}
    names = list(files)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name, res in zip(
            order, device.benchmark([files[n] for n in order], runs=runs, warmup=2), strict=True
        ):
            per[name].append(res.median_ms)
    return {n: statistics.median(v) for n, v in per.items()}


def isolate_check(files: list[Path], threads: int, runs: int, rounds: int) -> None:
    """ABAB: in-process vs fresh process per model, on the same files, alternating."""
    inproc, iso = HostDevice(threads, isolate=False), HostDevice(threads, isolate=True)
    ratios, walls = [], {"in-process": 0.0, "isolated": 0.0}
    for _ in range(rounds):
        got = {}
        for label, dev in (("in-process", inproc), ("isolated", iso)):
            t0 = time.perf_counter()
            got[label] = [r.median_ms for r in dev.benchmark(files, runs=runs, warmup=2)]
            walls[label] += time.perf_counter() - t0
        ratios += [b / a for a, b in zip(got["in-process"], got["isolated"], strict=True)]
    q = statistics.quantiles(ratios, n=10)
    print(f"\n## isolate: {len(files)} models x {rounds} rounds, {runs} runs each")
    print(
        f"isolated / in-process median latency: median {statistics.median(ratios):.3f}, "
        f"p10 {q[0]:.3f}, p90 {q[-1]:.3f}"
    )
    n = len(files) * rounds
    print(
        f"wall per model: in-process {walls['in-process'] / n:.2f} s, "
        f"isolated {walls['isolated'] / n:.2f} s"
    )


def drift(file: Path, threads: int, seconds: float) -> None:
    """Time one model every ~5 s for ``seconds``: how the machine's speed moves under load."""
    device = HostDevice(threads, isolate=False)
    gc.freeze()  # HostDevice's gc.collect() calls are slow in a process holding torch
    series = []
    t0 = time.perf_counter()
    print(f"\n## drift: 3x3 conv 32->32 every 5 s for {seconds:.0f} s")
    while time.perf_counter() - t0 < seconds:
        ms = device.benchmark([file], runs=10, warmup=2)[0].median_ms
        series.append(ms)
        print(f"{time.perf_counter() - t0:5.0f} s  load {os.getloadavg()[0]:4.1f}  {ms:7.2f} ms")
        time.sleep(5)
    q = statistics.quantiles(series, n=10)
    print(
        f"median {statistics.median(series):.1f} ms, min {min(series):.1f}, p10 {q[0]:.1f}, "
        f"p90 {q[-1]:.1f}, max {max(series):.1f}"
    )


def report(sec: dict[str, dict], ms: dict[str, float]) -> None:
    for title, items in sec.items():
        print(f"\n## {title}")
        print(f"{'model':<32} {'GMAC':>7} {'ms':>8} {'GMAC/s':>7}")
        for name, (_, _, macs) in items.items():
            rate = f"{macs / ms[name] / 1e6:7.1f}" if macs else "      -"
            print(f"{name:<32} {macs / 1e9:7.3f} {ms[name]:8.3f} {rate}")
    add1, add5 = ms["add 32 (x1 chain)"], ms["add 32 (x5 chain)"]
    per_add = (add5 - add1) / 4
    mbytes = 3 * 32 * H * W * 4 / 1e6
    print(
        f"one add of 32 ch (chain slope): {per_add:.3f} ms = {mbytes / per_add:.1f} GB/s "
        f"over {mbytes:.0f} MB read+written"
    )
    ref = sec["ops"]["3x3 32->32"][2] / ms["3x3 32->32"]
    for name in ("FSRCNN deconv 9x9 56->3 s2", "FSRCNN-s deconv 9x9 32->3 s2"):
        macs = sec["ops"][name][2]
        print(f"{name}: {ms[name] / (macs / ref):.1f}x the time of 3x3 convs of the same MACs")


def plot_widths(sec: dict[str, dict], ms: dict[str, float], img: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for k, marker in ((3, "o"), (1, "s")):
        for grid, face in ((ON_GRID, None), (OFF_GRID, "none")):
            xs = [w for w in grid]
            ys = [sec["widths"][f"{k}x{k} {w}->{w}"][2] / ms[f"{k}x{k} {w}->{w}"] / 1e6 for w in xs]
            label = f"{k}x{k} w->w" + (" (off grid)" if grid is OFF_GRID else "")
            a.plot(
                xs,
                ys,
                marker,
                mfc=face,
                label=label,
                color="C0" if k == 3 else "C1",
                ls="-" if grid is ON_GRID else "",
            )
    a.set(xlabel="width w (channels)", ylabel="GMAC/s", title="conv rate vs width")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    cs = list(range(8, 49, 4))
    for fmt, label in (("3x3 32->{c}", "cin 32, cout c"), ("3x3 {c}->32", "cin c, cout 32")):
        ys = [sec["cin/cout"][fmt.format(c=c)][2] / ms[fmt.format(c=c)] / 1e6 for c in cs]
        b.plot(cs, ys, "o-", label=label)
    b.set(xlabel="c (channels)", ylabel="GMAC/s", title="3x3 conv: in vs out channels")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = img / "latency_gmacs_vs_width.png"
    fig.savefig(out, dpi=110)
    return out


def plot_lut(lut_path: Path, img: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = json.loads(lut_path.read_text())
    outs = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for e in d["entries"]:
        k = e["key"]
        kind = f"conv {k['k']}x{k['k']}" if k["op"] == "conv" else k["op"]
        groups.setdefault(kind, []).append((e["macs"] or 1.0, e["median_ms"]))
    for kind, pts in groups.items():
        if kind.startswith("conv"):
            ax.scatter([p[0] / 1e9 for p in pts], [p[1] for p in pts], s=10, label=kind)
    for rate in (10, 30, 100):
        xs = [0.005, 3]
        ax.plot(xs, [x / rate * 1e3 for x in xs], "k:", lw=0.7)
        ax.annotate(f"{rate} GMAC/s", (2, 2 / rate * 1e3), fontsize=7)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="GMAC",
        ylabel="ms (table entry)",
        title=f"{len(d['entries'])} table entries vs MACs",
    )
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    outs.append(img / "latency_lut_vs_macs.png")
    fig.savefig(outs[-1], dpi=110)

    val_path = lut_path.with_name(f"{lut_path.stem}.validate.json")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    fitn = d["nets"]
    ax.scatter(
        [n["median_ms"] for n in fitn],
        [n["predicted_ms"] for n in fitn],
        s=14,
        label=f"fit nets ({len(fitn)})",
        marker="x",
    )
    if val_path.is_file():
        v = json.loads(val_path.read_text())
        ax.scatter(
            [n["measured_ms"] for n in v["nets"]],
            [n["predicted_ms"] for n in v["nets"]],
            s=16,
            label=f"validation ({v['n']}): MAPE {v['mape_pct']:.1f}%, Spearman {v['spearman']:.3f}",
        )
    lo = min(n["median_ms"] for n in fitn) * 0.8
    hi = max(n["median_ms"] for n in fitn) * 1.2
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.7)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="measured ms",
        ylabel="predicted ms",
        title="whole nets: predicted vs measured",
    )
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    outs.append(img / "latency_validation.png")
    fig.savefig(outs[-1], dpi=110)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lut", type=Path, default=None, help="also plot this table (+ validation)")
    ap.add_argument("--only-lut", action="store_true", help="only the --lut plots, no timing")
    ap.add_argument(
        "--drift", type=float, default=120, help="seconds of the drift series (0: none)"
    )
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    args.img.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    title = (
        f"{machine().split(',')[0]}, LiteRT + XNNPACK, {args.threads} threads, "
        f"LR 640x360; shared machine, load {load:.1f}"
    )
    print(f"machine: {machine()}; load average {os.getloadavg()}")
    if args.lut is not None:
        for p in plot_lut(args.lut, args.img, title):
            print(f"saved {p}")
    if args.only_lut:
        return
    sec = models()
    with tempfile.TemporaryDirectory(prefix="srsearch-latbench-") as tmp:
        t0 = time.perf_counter()
        files = export_all(sec, Path(tmp))
        print(f"exported {len(files)} models in {time.perf_counter() - t0:.0f} s")
        device = HostDevice(args.threads, isolate=False)
        gc.freeze()  # see srsearch.latency.runner._frozen_gc
        ms = time_rounds(device, files, args.runs, args.rounds)
        report(sec, ms)
        print(f"saved {plot_widths(sec, ms, args.img, title)}")
        picks = [
            "3x3 8->8",
            "3x3 32->32",
            "1x1 16->16",
            "1x1 64->64",
            "3x3 32->24",
            "add 32 (x1 chain)",
            "skip 3->12 (1x1)",
            "pixel shuffle 12->3 (DEPTH_TO_SPACE)",
        ]
        isolate_check([files[n] for n in picks], args.threads, args.runs, args.rounds)
        if args.drift > 0:
            drift(files["3x3 32->32"], args.threads, args.drift)
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
