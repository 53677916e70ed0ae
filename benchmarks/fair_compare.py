"""Same training for every model: each trained from random initialisation with one recipe, for
the same steps and images, with several seeds; scored on held-out photos with mean +- std.

    python benchmarks/fair_compare.py --out runs/fair --steps 5000 --seeds 0 1 2 \
        --data ../shared/datasets/sun80+../shared/datasets/t91 \
        --model searched-ecb='{"family": "subnet", "rep": "ecb", "arch": {...}}' \
        --model ecbsr-m4c12='{"family": "ecbsr", "m": 4, "channels": 12, "act": "prelu"}' \
        --model ecbsr-m4c8 --workers 2

Every (model, seed) trains in OUT/<model>/seed<k> (a killed run resumes; a finished one is
skipped); `--workers N` runs N trainings at once, one torch thread each, each claiming the next
unclaimed (model, seed); `--accelerator gpu` trains on a GPU and `--deadline-s S` starts no
training after S seconds. `--train-only` stops there, so a GPU machine can train and this
script, rerun here on the copied OUT, scores (sun80 from ../shared or $SRSEARCH_SUN80). Then
every model is scored (its exported form: ECB and rep blocks
collapsed) on sun80's last 10 (when ../shared is there) and on the outside photos, and the
script prints per set the mean +- std over seeds, the learning curve from the training logs and
each model's margin over the reference (`--reference`, the first model by default), with its
standard deviation sqrt(sd_a^2 + sd_b^2) and whether it exceeds two of them. Writes
OUT/fair_compare.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, outside_photos, run_claimed, sun80_last10  # noqa: E402

from srsearch.comparison.fairness import margin_stats, training_compute  # noqa: E402
from srsearch.models import preset_config  # noqa: E402


def _model_config(spec: str, scale: int) -> tuple[str, dict]:
    name, _, cfg = spec.partition("=")
    if not cfg:
        return name, preset_config(name, scale)
    return name, {**json.loads(cfg), "scale": scale}


def _train_one(job: tuple[str, dict, int, dict, str]) -> None:
    import torch

    from srsearch.train.training import TrainConfig, train

    name, model_cfg, seed, train_kw, out = job
    torch.set_num_threads(1)
    cfg = TrainConfig(**train_kw, seed=seed)
    run = Path(out) / name / f"seed{seed}"
    if (run / "model.pt").is_file():
        return
    t0 = time.perf_counter()
    train(model_cfg, cfg, run, resume=True)
    print(f"[fair] {name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)


def _curve(run: Path) -> dict[int, float]:
    """val PSNR by step from the CSV logs of every (re)start of a run."""
    points = {}
    for f in sorted(run.glob("logs/version_*/metrics.csv")):
        with f.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("val/psnr"):
                    points[int(row["step"]) + 1] = float(row["val/psnr"])
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", action="append", required=True, metavar="NAME[=JSON]")
    ap.add_argument("--reference", default=None, help="model the margins are taken against")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-warmup-steps", type=int, default=0,
                    help="linear learning-rate warm-up before the cosine (default 0)")
    ap.add_argument("--val-data", default=None,
                    help="the trainings' validation set, for the learning curves (default: "
                    "the val split of --data); choose settings on one that is not reported")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-patch", type=int, default=48)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--val-every", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--accelerator", default="cpu", help="Lightning accelerator, e.g. gpu")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="start no training after this many seconds (a rerun finishes the rest)")
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    models = dict(_model_config(s, args.scale) for s in args.model)
    train_kw = dict(data=args.data, scale=args.scale, max_steps=args.steps, lr=args.lr,
                    lr_warmup_steps=args.lr_warmup_steps, val_data=args.val_data,
                    batch_size=args.batch_size, lr_patch=args.lr_patch,
                    val_every=args.val_every, ckpt_every=100, accelerator=args.accelerator)
    jobs = [(f"{n}__seed{s}", (n, c, s, train_kw, str(args.out)))
            for s in args.seeds for n, c in models.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    run_claimed(_train_one, jobs, args.out, args.workers, args.deadline_s, "fair")
    if args.train_only:
        return
    _score(args, models)


def _score(args: argparse.Namespace, models: dict[str, dict]) -> None:
    import tempfile

    from srsearch.data.datasets import load_images
    from srsearch.evaluation.evaluate import evaluate
    from srsearch.models import inference_form
    from srsearch.models.modelio import load_model_file

    tmp = Path(tempfile.mkdtemp(prefix="fair-compare-"))
    sets = {"outside": load_images(str(outside_photos(tmp / "outside")), args.scale, "all")}
    sun = sun80_last10(tmp / "sun80")
    if sun:
        sets["sun80_last10"] = load_images(str(sun), args.scale, "all")
    result: dict = {"machine": machine(), "steps": args.steps, "seeds": args.seeds,
                    "data": args.data, "lr": args.lr, "lr_warmup_steps": args.lr_warmup_steps,
                    "val_data": args.val_data, "batch_size": args.batch_size,
                    "lr_patch": args.lr_patch, "models": {}}
    n_train = len(load_images(args.data, args.scale, "train"))
    for name, cfg in models.items():
        runs = [args.out / name / f"seed{s}" for s in args.seeds]
        done = [r for r in runs if (r / "model.pt").is_file()]
        if not done:
            continue
        psnr = {k: [] for k in sets}
        for run in done:
            model = inference_form(load_model_file(run / "model.pt")[0]).eval()
            for k, images in sets.items():
                psnr[k].append(evaluate(model, images, args.scale)["mean"]["psnr"])
        compute = training_compute(cfg, args.steps, args.batch_size, args.lr_patch)
        result["models"][name] = {"config": cfg, "seeds_done": len(done), "psnr": psnr,
                                  "curves": {r.name: _curve(r) for r in done},
                                  "train_images": n_train, **compute}
    ref = args.reference or next(iter(result["models"]))
    print(f"\n{args.steps} steps from scratch on {args.data} (lr {args.lr}, warm-up "
          f"{args.lr_warmup_steps}, batch "
          f"{args.batch_size}, LR patch {args.lr_patch}); seeds {args.seeds}")
    for k in sets:
        print(f"\n{k}: mean +- std (n seeds); margin over {ref} +- sd, significant if > 2 sd")
        for name, r in result["models"].items():
            m = margin_stats(r["psnr"][k], result["models"][ref]["psnr"][k])
            line = (f"  {name:<18} {m['a_mean']:.3f} +- {m['a_std']:.3f} (n={len(r['psnr'][k])})"
                    f"  train TMACs {r['train_macs'] / 1e12:.1f}")
            if name != ref:
                line += (f"  margin {m['margin_db']:+.3f} +- {m['margin_sd']:.3f}"
                         f" {'significant' if m['significant'] else 'not significant'}")
            print(line)
            r.setdefault("margins", {})[k] = m
    print("\nlearning curves (val PSNR of the training spec's val split, by step):")
    for name, r in result["models"].items():
        for seed, pts in r["curves"].items():
            print(f"  {name:<18} {seed}: " + "  ".join(f"{s}:{v:.3f}" for s, v in sorted(
                pts.items())))
    (args.out / "fair_compare.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out / 'fair_compare.json'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
