"""The hand-designed family inside the search (`--rerank-family`): the space's ECBSR-style
chains, the twins scaled to the budget, stage 2's first trials and the re-rank's shortlist."""

from __future__ import annotations

import json

import pytest

from srsearch.common.errors import UserError
from srsearch.search import RunConfig, Stage2Config, run_search, search_architecture
from srsearch.search.rerank import candidates
from srsearch.search.stage2 import family_twins
from supernet.space import SearchSpace, macs
from tests.test_search import (
    BUDGET,
    SPACE,
    FakePredictor,
    _evaluator,
    images,  # noqa: F401  (fixtures)
    one_thread,  # noqa: F401
    supernet,  # noqa: F401
)


def test_chains_are_the_ecbsr_style_nets_of_the_space():
    space = SearchSpace(scale=3, max_depth=3, widths=(8, 16), skip="bicubic")
    chains = space.chains()
    assert len(chains) == 3 * 2
    for arch in chains:
        assert space.contains(arch) and arch.skip == "bicubic" and arch.act == "relu"
        assert {(c.block, c.width) for c in arch.cells} == {("conv", arch.head_width)}
    assert {(a.depth, a.head_width) for a in chains} == {(m, c) for m in (1, 2, 3)
                                                         for c in (8, 16)}
    assert SearchSpace(blocks=("res",)).chains() == []


def test_twins_are_the_largest_chains_in_the_band():
    pred = FakePredictor()
    floor = 0.5 * BUDGET
    twins = family_twins(SPACE, pred, BUDGET, floor, 2)
    band = [a for a in SPACE.chains() if floor <= pred.predict(a) <= BUDGET]
    assert len(band) > 2  # the choice means something
    assert len(twins) == 2 and all(a in band for a in twins)
    most = sorted((macs(a, (1, 1)) for a in band), reverse=True)[:2]
    assert [macs(a, (1, 1)) for a in twins] == most
    assert family_twins(SPACE, pred, BUDGET, floor, 0) == []
    assert family_twins(SPACE, pred, 0.01, 0.0, 2) == []  # none fits: none


@pytest.mark.parametrize("sampler", ["evolution", "tpe"])
def test_stage2_scores_the_twins_first(sampler, supernet, images, tmp_path):  # noqa: F811
    pred = FakePredictor()
    twins = tuple(family_twins(SPACE, pred, BUDGET, 0.0, 2))
    cfg = Stage2Config(BUDGET, n_trials=5, sampler=sampler, first=twins)
    r = search_architecture(SPACE, pred, _evaluator(supernet, images), cfg, tmp_path / "s.db")
    assert [json.loads(t["arch"]) for t in r.trials[:2]] == [a.to_dict() for a in twins]
    assert all(t["feasible"] and t["scored"] for t in r.trials[:2])
    # resumed with more trials: the twins are not enqueued again
    more = search_architecture(SPACE, pred, _evaluator(supernet, images),
                               Stage2Config(BUDGET, n_trials=7, sampler=sampler, first=twins),
                               tmp_path / "s.db")
    assert len(more.trials) == 7
    assert sum(json.loads(t["arch"]) == twins[0].to_dict() for t in more.trials) >= 1
    with pytest.raises(UserError, match="first"):  # another seeding is another search
        search_architecture(SPACE, pred, _evaluator(supernet, images),
                            Stage2Config(BUDGET, n_trials=8, sampler=sampler),
                            tmp_path / "s.db")


def test_twins_lead_the_shortlist_whatever_their_score():
    def arch(depth, w):
        return {"scale": 2, "head_width": w,
                "cells": [{"block": "conv", "width": w, "inner": w}] * depth}

    def res(w):
        return {"scale": 2, "head_width": w,
                "cells": [{"block": "res", "width": w, "inner": 12}]}

    trials = [{"arch": a, "feasible": True, "scored": True, "psnr": p}
              for a, p in [(res(8), 36.0), (arch(2, 12), 35.0), (res(12), 35.5),
                           (arch(1, 8), 34.0)]]
    from supernet.space import ArchConfig

    first = [ArchConfig.from_dict(arch(1, 8)), ArchConfig.from_dict(arch(2, 12))]
    top = candidates(trials, 3, "best", first)
    assert [t["arch"] for t in top] == [arch(1, 8), arch(2, 12), res(8)]
    assert [t.get("family", False) for t in top] == [True, True, False]
    # a twin stage 2 never scored (infeasible there) is left out, not invented
    first.append(ArchConfig.from_dict(arch(2, 8)))
    assert [t["arch"] for t in candidates(trials, 5, "depths", first)][:2] == [
        arch(1, 8), arch(2, 12)]
    assert len(candidates(trials, 5, "depths", first)) == 4


def test_rerank_family_is_checked_and_kept_on_resume(supernet, image_dir, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="--rerank-family -1 is invalid: it must be 0 or more"):
        RunConfig(budget_ms=BUDGET, data=str(image_dir), rerank=2, rerank_family=-1)
    out = tmp_path / "run"
    cfg = RunConfig(budget_ms=BUDGET, data=str(image_dir), trials=4, stage3_trials=0,
                    rerank=2, rerank_family=1, rerank_steps=1, finetune_steps=0, batch_size=2,
                    lr_patch=8, crop=16, seed=0, budget_floor=0.0)
    run_search(supernet, FakePredictor(), cfg, out)
    ranked = json.loads((out / "rerank" / "rerank.json").read_text())
    twin = family_twins(SPACE, FakePredictor(), BUDGET, 0.0, 1)[0]
    assert ranked["first"] == [twin.to_dict()]
    assert ranked["rows"][0]["arch"] == twin.to_dict() and ranked["rows"][0]["family"]
    with pytest.raises(UserError, match="rerank_family"):
        run_search(supernet, FakePredictor(), RunConfig(**{**cfg.__dict__, "rerank_family": 0}),
                   out, resume=True)


def test_old_runs_resume_as_without_twins():
    from srsearch.search.run_config import _BEFORE

    assert _BEFORE["rerank_family"] == 0
    assert RunConfig.from_dict({"budget_ms": 30.0}).rerank_family == 0


def test_the_pipeline_weighs_two_twins_by_default():
    from srsearch.pipeline.config import PipelineConfig

    assert PipelineConfig().run_config().rerank_family == 2
    assert PipelineConfig(rerank=0).run_config().rerank_family == 2  # no re-rank: still valid
