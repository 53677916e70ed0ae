"""`srsearch pipeline`: the main job. Its flags are generated from `PipelineConfig`'s fields."""

from __future__ import annotations

import argparse
import time
import types
import typing
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="the main job: train, search, export, benchmark, report",
        description="Run every stage into runs/<timestamp>/ (or --run-dir); "
        "rerunning on the same run dir skips finished stages. Every setting is a flag and a "
        "key of --config FILE (TOML, keys spelt with underscores); flags override the file.",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="TOML file of settings (flags override it)"
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run directory (default: runs/<timestamp>); reuse one to resume",
    )
    add_config_flags(p)
    p.set_defaults(func=run)


def _int_or_str(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def flag_spec(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``hint``: tuples take several values, optional
    types their inner type, ``int | str`` a number or a word."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return {"nargs": "*", "type": args[0], "metavar": "VALUE"}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if set(inner) == {int, str}:
            return {"type": _int_or_str}
        (hint,) = inner
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": hint}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per `PipelineConfig` field, with the field's type, default and
    help (``metadata["help"]``). Flags not given stay out of the namespace (argparse.SUPPRESS),
    so only the ones given override ``--config``."""
    from dataclasses import fields

    from srsearch.pipeline import PipelineConfig

    hints = typing.get_type_hints(PipelineConfig)
    g = p.add_argument_group("settings (PipelineConfig; TOML keys of --config)")
    for f in fields(PipelineConfig):
        default = f.default
        shown = " ".join(default) if isinstance(default, tuple) else default
        shown = "none" if shown in ("", None) else shown
        g.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=argparse.SUPPRESS,
            help=f"{f.metadata['help']} (default: {shown})",
            **flag_spec(hints[f.name]),
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `PipelineConfig` fields given as flags: {field name: value}."""
    from dataclasses import fields

    from srsearch.pipeline import PipelineConfig

    return {f.name: getattr(args, f.name) for f in fields(PipelineConfig) if hasattr(args, f.name)}


def run(args: argparse.Namespace) -> int:
    from srsearch.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig.from_toml(args.config, config_overrides(args))
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    report = run_pipeline(cfg, run_dir)
    print(f"[pipeline] report: {report}")
    return 0
