"""Which conv blocks buy width on this runtime: whole x2 nets of one block type each, exported
like the latency table's probes and timed in one interleaved session beside the dense 16-wide
chain (ECBSR-M4C16's twin), at the LR frame of a 1280x720 output.

    python benchmarks/block_speed.py [--rounds 5] [--threads 2] [--precision fp32|int8]
    python benchmarks/block_speed.py --train-steps 2000 --nets 1,6,7,10 \
        --data runs/data/sun80+runs/data/t91 --val-data runs/eval/t91_val --workers 2

Every net is head conv 3 -> C, its blocks, a tail conv C -> 12 and one pixel shuffle, plus
ECBSR's skip (`srcore.layers.LRSkip`: each input channel repeated 4 times, added before the
shuffle), with ReLUs; weights are random (the time depends on the ops). Block types:

- ``dense``: 3x3 conv C -> C (the space's conv cell);
- ``group``: 3x3 conv in G groups, then a 1x1 C -> C (XLSR-style, session 16);
- ``dwsep``: depthwise 3x3 on C, then a 1x1 C -> C (MobileNet v1);
- ``invres``: 1x1 C -> tC, depthwise 3x3 on tC, 1x1 tC -> C, plus the identity (MobileNet v2).

Prints the machine, each net's parameters (about its MACs per LR pixel), its median ms over the
rounds, and its MACs per ms against the dense chain's: a block buys width only where it runs
at least as many MACs per ms as a dense conv does.

With ``--train-steps N`` it then trains the nets named by ``--nets`` (indices into NETS) from
scratch with `srsearch.train.training.train` (batch 16, LR patch 48, ``--lr``, cosine, one torch
thread per worker; OUT/<index>/seed<k>, resumable) and prints each one's Y-PSNR on ``--val-data``
(choose on a split you do not report). The nets are registered as the model family
``block_speed`` in this script only: their model.pt files load here, not in `srsearch`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_claimed  # noqa: E402

from android_bench import HostDevice  # noqa: E402
from srcore.layers import LRSkip  # noqa: E402
from srsearch.latency.runner import export_tflite  # noqa: E402
from srsearch.search.rerank import lower_median  # noqa: E402

H, W = 360, 640
SCALE = 2


def block(kind: str, c: int, arg: int) -> nn.Module:
    """One block of ``kind`` on ``c`` channels; ``arg`` is the groups (group) or the expansion
    (invres)."""
    if kind == "dense":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
    if kind == "group":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=arg), nn.ReLU(),
                             nn.Conv2d(c, c, 1), nn.ReLU())
    if kind == "dwsep":
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(),
                             nn.Conv2d(c, c, 1), nn.ReLU())
    if kind == "invres":
        return _Residual(nn.Sequential(nn.Conv2d(c, arg * c, 1), nn.ReLU(),
                                       nn.Conv2d(arg * c, arg * c, 3, padding=1, groups=arg * c),
                                       nn.ReLU(), nn.Conv2d(arg * c, c, 1)))
    raise ValueError(f"unknown block kind {kind!r}")


class _Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Net(nn.Module):
    """head 3 -> C, ``n`` blocks, tail C -> 3 r^2, ECBSR's nearest skip, pixel shuffle."""

    def __init__(self, kind: str, c: int, n: int, arg: int = 1) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(*[block(kind, c, arg) for _ in range(n)])
        self.tail = nn.Conv2d(c, 3 * SCALE * SCALE, 3, padding=1)
        self.skip = LRSkip(SCALE)
        self.shuffle = nn.PixelShuffle(SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.tail(self.body(self.head(x))) + self.skip(x))


# (label, kind, width, blocks, groups / expansion); the first is the reference
NETS = [
    ("dense C16 x4 (M4C16 twin)", "dense", 16, 4, 1),
    ("dense C16 x5", "dense", 16, 5, 1),
    ("dense C24 x2", "dense", 24, 2, 1),
    ("group C32/4 x2", "group", 32, 2, 4),
    ("dwsep C16 x8", "dwsep", 16, 8, 1),
    ("dwsep C24 x6", "dwsep", 24, 6, 1),
    ("dwsep C32 x4", "dwsep", 32, 4, 1),
    ("dwsep C48 x2", "dwsep", 48, 2, 1),
    ("invres C16 t2 x4", "invres", 16, 4, 2),
    ("invres C16 t4 x2", "invres", 16, 2, 4),
    ("invres C24 t2 x2", "invres", 24, 2, 2),
]


FAMILY = "block_speed"  # the model family the nets train as (`register_family`)


@dataclasses.dataclass
class BlockNetConfig:
    scale: int = SCALE
    kind: str = "dense"
    c: int = 16
    n: int = 4
    arg: int = 1


def net_config(cfg: BlockNetConfig) -> dict:
    """The config dict a trained net's checkpoint holds (`srsearch.models.build_model`)."""
    return {"family": FAMILY, **dataclasses.asdict(cfg)}


def register_family() -> None:
    """Make `Net` trainable by `srsearch.train` (its checkpoints hold a config, not a module)."""
    from srsearch.models import families
    from srsearch.models._registry import register

    def build(cfg: BlockNetConfig) -> Net:
        if cfg.scale != SCALE:
            raise ValueError(f"block_speed nets are x{SCALE}")
        net = Net(cfg.kind, cfg.c, cfg.n, cfg.arg)
        net.config = lambda: net_config(cfg)
        return net

    if FAMILY not in families():
        register(FAMILY, BlockNetConfig, build)


def _train_one(job: tuple[int, int, dict, str]) -> None:
    from srsearch.train.training import TrainConfig, train

    index, seed, train_kw, out = job
    torch.set_num_threads(1)
    register_family()
    _, kind, c, n, arg = NETS[index]
    run = Path(out) / str(index) / f"seed{seed}"
    if not (run / "model.pt").is_file():
        train(net_config(BlockNetConfig(SCALE, kind, c, n, arg)),
              TrainConfig(**train_kw, seed=seed), run, resume=True)


def train_and_score(args: argparse.Namespace) -> None:
    from srsearch.data.datasets import load_images
    from srsearch.evaluation.evaluate import evaluate
    from srsearch.models.modelio import load_model_file

    register_family()
    indices = [int(i) for i in args.nets.split(",")]
    train_kw = dict(data=args.data, val_data=args.val_data, max_steps=args.train_steps,
                    lr=args.lr, batch_size=16, lr_patch=48, val_every=500, scale=SCALE)
    jobs = [(f"{i}__seed{s}", (i, s, train_kw, str(args.out)))
            for s in args.seeds for i in indices]
    args.out.mkdir(parents=True, exist_ok=True)
    run_claimed(_train_one, jobs, args.out, args.workers, tag="block_speed")
    val = load_images(args.val_data, SCALE, "all")
    print(f"trained from scratch {args.train_steps} steps on {args.data}, lr {args.lr}, "
          f"seeds {args.seeds}; Y-PSNR on {args.val_data}")
    for i in indices:
        runs = [args.out / str(i) / f"seed{s}" / "model.pt" for s in args.seeds]
        psnr = [evaluate(load_model_file(r)[0].eval(), val, SCALE)["mean"]["psnr"]
                for r in runs if r.is_file()]
        cells = " ".join(f"{p:.3f}" for p in psnr) or "not trained"
        print(f"{i:3d} {NETS[i][0]:28s} {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--train-steps", type=int, default=0, help="train --nets this long (0: no)")
    ap.add_argument("--nets", default=",".join(str(i) for i in range(len(NETS))))
    ap.add_argument("--data", default="runs/data/sun80+runs/data/t91")
    ap.add_argument("--val-data", default="runs/eval/t91_val")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/block_speed"))
    ap.add_argument("--skip-timing", action="store_true", help="only train and score")
    args = ap.parse_args()
    bad = [i for i in args.nets.split(",") if not (i.isdigit() and int(i) < len(NETS))]
    if bad:
        ap.error(f"--nets {args.nets}: {', '.join(bad)} is not an index into NETS "
                 f"(0-{len(NETS) - 1}); give a comma list such as 0,4,6")
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}")
    if not args.skip_timing:
        time_nets(args)
    if args.train_steps:
        train_and_score(args)


def time_nets(args: argparse.Namespace) -> None:
    nets = [(label, Net(kind, c, n, arg).eval()) for label, kind, c, n, arg in NETS]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [export_tflite(m, (1, 3, H, W), Path(tmp) / f"n{i}.tflite",
                               {"precision": args.precision})
                 for i, (_, m) in enumerate(nets)]
        results = HostDevice(args.threads).benchmark_rounds(paths, rounds=args.rounds,
                                                            runs=args.runs)
    rows = []
    for (label, m), r in zip(nets, results, strict=True):
        rounds = list(r.extra["round_ms"])
        params = sum(p.numel() for p in m.parameters())
        rows.append((label, params, lower_median(rounds), min(rounds), max(rounds)))
    ref = rows[0][1] / rows[0][2]
    print(f"x{SCALE} nets at LR {W}x{H}, {args.precision}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds of {args.runs} runs; ms = median over rounds")
    print(f"{'net':28s} {'params':>7s} {'ms':>8s} {'rounds':>15s} {'MACs/ms vs ref':>15s}")
    for label, params, ms, lo, hi in rows:
        print(f"{label:28s} {params:7d} {ms:8.2f} {lo:7.2f}-{hi:<7.2f} {params / ms / ref:15.2f}")


if __name__ == "__main__":
    main()
