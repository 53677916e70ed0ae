"""The `srsearch` command line: one sub-command per module in `srsearch.commands`.

Commands are registered explicitly (no import-by-naming-convention). Each command module has
`add_parser(subparsers)` which sets `func=run` on its parser; heavy imports happen inside `run`
so that `srsearch --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from srsearch.common.errors import UserError

# Explicit registry: module path under srsearch.commands, in the order --help shows them.
COMMAND_MODULES: tuple[str, ...] = (
    "pipeline",
    "data",
    "train",
    "eval",
    "upscale",
    "supernet",
    "bench",
    "latency",
    "search",
    "compare",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srsearch",
        description="Compiler-aware architecture and pruning search for mobile super-resolution.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"srsearch.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from srsearch.common.quiet import quiet_library_logs

    quiet_library_logs()  # worker pools call it too (srsearch.latency.runner)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"srsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"srsearch {args.command}: interrupted; rerun with --resume to continue",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
