"""`srsearch data`: download DIV2K (`fetch`) and list what a `--data SPEC` holds (`info`)."""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

from srsearch.common.errors import UserError

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "data" / "div2k.json"
_DONE_DIR = ".srsearch-fetch"  # under --root: one marker per fully extracted archive


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="download DIV2K; list the images of a --data spec")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    f = actions.add_parser("fetch", help="download, verify and extract a dataset (resumable)")
    f.add_argument("dataset", choices=["div2k"])
    f.add_argument("--root", type=Path, required=True, help="folder to extract into")
    f.add_argument("--base-url", help="mirror to download from (default: the manifest's URL)")
    f.add_argument("--scales", default="2,3,4", help="LR scales to fetch (default: 2,3,4)")
    f.add_argument("--no-lr", action="store_true", help="HR only; LR is then generated locally")
    f.add_argument("--keep-zips", action="store_true", help="keep archives after extracting")
    f.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="archive list")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")

    i = actions.add_parser("info", help="list the images of each split of a --data spec")
    i.add_argument("--data", required=True, help="'builtin', a folder of HR images, div2k:ROOT")
    i.add_argument("--scale", type=int, default=2, choices=(2, 3, 4),
                   help="upscaling factor (default: 2, as in the other commands)")
    i.add_argument("--split", choices=["train", "val", "all"], help="one split (default: both)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        return _fetch(args)
    return _info(args)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parse_scales(text: str, available: set[int]) -> list[int]:
    try:
        scales = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--scales {text!r}: give comma-separated integers, e.g. 2,3,4") from None
    bad = [s for s in scales if s not in available]
    if bad:
        raise UserError(
            f"--scales {text}: no LR archives for x{bad}; available: {sorted(available)}"
        )
    return scales


def _load_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise UserError(
            f"--manifest {path}: {exc.strerror}; give the data/div2k.json file"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"--manifest {path}: not valid JSON ({exc})") from None


def _extract(zip_path: Path, root: Path, top: str) -> None:
    """Extract an archive whose members all lie under `top` into `root`."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            prefix = top.rstrip("/") + "/"
            names = zf.namelist()
            # Members must lie under top; directory entries of its parents are fine too.
            outside = [
                n
                for n in names
                if not n.startswith(prefix) and not (n.endswith("/") and prefix.startswith(n))
            ]
            if outside or not names:
                raise UserError(
                    f"{zip_path} is not the expected archive: {outside[:1] or 'no members'} "
                    f"outside {prefix}; delete it and rerun"
                )
            zf.extractall(root)  # strips absolute paths and '..'; checks each member's CRC
    except zipfile.BadZipFile as exc:
        raise UserError(f"{zip_path} is corrupt ({exc}); delete it and rerun") from None


def _fetch(args: argparse.Namespace) -> int:
    from srsearch.data.fetch import fetch

    manifest = _load_manifest(args.manifest)
    archives = manifest["archives"]
    base_url = (args.base_url or manifest["base_url"]).rstrip("/") + "/"
    if args.no_lr:
        wanted = [a for a in archives if a["scale"] is None]
    else:
        scales = _parse_scales(args.scales, {a["scale"] for a in archives if a["scale"]})
        wanted = [a for a in archives if a["scale"] is None or a["scale"] in scales]
    root: Path = args.root.expanduser()
    done_dir = root / _DONE_DIR
    done_dir.mkdir(parents=True, exist_ok=True)
    for a in wanted:
        marker = done_dir / f"{a['file']}.done"
        if marker.exists() and (root / a["extracts_to"]).is_dir():
            _log(f"{a['file']}: already extracted to {root / a['extracts_to']}")
            continue
        zip_path = root / a["file"]
        _log(f"{a['file']}: downloading from {base_url}")
        fetch(
            base_url + a["file"],
            zip_path,
            a.get("sha256"),
            size=a.get("size"),
            progress=not args.no_progress,
        )
        _log(f"{a['file']}: extracting")
        _extract(zip_path, root, a["extracts_to"])
        marker.write_text(json.dumps({"sha256": a.get("sha256"), "size": zip_path.stat().st_size}))
        if not args.keep_zips:
            zip_path.unlink()
    _log(f"done: use --data div2k:{root}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from srsearch.data.datasets import load_images

    splits = [args.split] if args.split else ["train", "val"]
    for split in splits:
        images = load_images(args.data, args.scale, split)
        mpx = sum(im.hr.shape[0] * im.hr.shape[1] for im in images) / 1e6
        print(f"{split}: {len(images)} images, {mpx:.1f} HR megapixels, x{args.scale}")
        width = max(len(im.name) for im in images)
        for im in images:
            (h, w), (lh, lw) = im.hr.shape[:2], im.lr.shape[:2]
            print(f"  {im.name:<{width}}  HR {w}x{h}  LR {lw}x{lh}")
    return 0
