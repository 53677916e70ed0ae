import argparse

import pytest

from srsearch.cli import COMMAND_MODULES, build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert f"    {name}" in text
    assert set(COMMAND_MODULES) >= {
        "pipeline",
        "train",
        "eval",
        "supernet",
        "bench",
        "latency",
        "search",
        "export",
        "data",
    }


def _choices(parser: argparse.ArgumentParser, path: tuple[str, ...], flag: str) -> tuple:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if flag in a.option_strings)
    return tuple(action.choices)


def test_flag_choices_are_their_owners_constants():
    # The parsers spell these lists out so that `srsearch --help` imports no torch; each list
    # is owned by the module that acts on it, and must not drift from it.
    from srcore.layers import SKIPS
    from srsearch.models.ecbsr import BRANCH_INITS
    from srsearch.models.subnet import REP_KINDS
    from srsearch.search.rerank import INITS, POOLS
    from srsearch.search.stage2 import SAMPLERS
    from srsearch.search.stage3 import SAMPLERS as STAGE3_SAMPLERS

    owners = {
        (("search",), "--rerank-from"): INITS,
        (("search",), "--rerank-pool"): POOLS,
        (("search",), "--train-rep"): REP_KINDS,
        (("search",), "--sampler"): SAMPLERS,
        (("search",), "--stage3-sampler"): STAGE3_SAMPLERS,
        (("supernet",), "--skip"): SKIPS,
        (("latency", "build"), "--skip"): SKIPS,
        (("compare",), "--rep"): REP_KINDS,
        (("compare",), "--ecb-init"): BRANCH_INITS,
    }
    parser = build_parser()
    for (path, flag), owned in owners.items():
        assert set(_choices(parser, path, flag)) == set(owned), (path, flag)
