"""Stages 2 and 3: architecture and pruning search under a latency budget (docs/search.md).

The search receives its latency predictor (anything with ``predict(arch) -> ms``) and its
accuracy evaluator as arguments; it builds neither.

    evaluator = SubnetEvaluator(supernet, load_images(spec, scale, "val"), scale, crop=64)
    best = search_architecture(space, predictor, evaluator, Stage2Config(budget_ms=30), db)
    pruned = search_pruning(supernet.get_active_subnet(best.arch), predictor,
                            evaluator.scorer, 30, 40, db, floors=space_floors(space))
    compact = apply_pruning(supernet.get_active_subnet(best.arch), pruned.prune)

`run_search` does all of it (and fine-tuning) in a resumable run directory.
"""

from srsearch.search.evaluator import ImageScorer, Score, SubnetEvaluator
from srsearch.search.predictor import LatencyPredictor, PredictorDefaults, SearchPredictor
from srsearch.search.pruning import PruneConfig, apply_pruning, channel_groups, prune_by_ratios
from srsearch.search.run import RunConfig, run_search
from srsearch.search.stage2 import (
                                    RegularizedEvolution,
                                    Stage2Config,
                                    Stage2Result,
                                    check_budget,
                                    search_architecture,
)
from srsearch.search.stage3 import Stage3Result, search_pruning, space_floors

__all__ = [
    "ImageScorer",
    "LatencyPredictor",
    "PredictorDefaults",
    "PruneConfig",
    "RegularizedEvolution",
    "RunConfig",
    "Score",
    "Stage2Config",
    "Stage2Result",
    "SearchPredictor",
    "Stage3Result",
    "SubnetEvaluator",
    "apply_pruning",
    "channel_groups",
    "check_budget",
    "prune_by_ratios",
    "run_search",
    "search_architecture",
    "search_pruning",
    "space_floors",
]
