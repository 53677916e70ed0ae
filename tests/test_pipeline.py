import json

import pytest

from srsearch.cli import main
from srsearch.models.modelio import load_model_file

TINY = """
data = "{data}"
baselines = ["espcn", "ecbsr-m4c8"]
train_steps = 4
batch_size = 2
lr_patch = 8
supernet_steps = 4
max_width = 12
max_depth = 2
search_trials = 4
stage3_trials = 2
rerank = 2
rerank_steps = 2
latency_runs = 2
latency_nets = 4
validate_nets = 3
out_size = "48x32"
bench_runs = 3
budget_ms = 1000.0
"""


def test_pipeline_end_to_end_then_skips_finished_stages(image_dir, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(data=image_dir))
    run_dir = tmp_path / "run"
    # trained as ECB blocks (the default "none" is the search's and compare's tests' form)
    flags = ["--config", str(config), "--run-dir", str(run_dir), "--budget-ms", "20",
             "--train-rep", "ecb"]
    assert main(["pipeline", *flags]) == 0
    assert json.loads((run_dir / "config.json").read_text())["budget_ms"] == 20.0  # flag wins
    stages = json.loads((run_dir / "stages.json").read_text())
    assert list(stages) == ["supernet", "latency", "search", "baselines", "export", "bench",
                            "evaluate", "report"]
    report = (run_dir / "report.md").read_text()
    scaled = stages["baselines"]["scaled"]
    assert scaled.startswith("ecbsr-m")
    # tiny nets at 48x32 all run far under 20 ms: the slowest timed is the scaled baseline
    picked = json.loads((run_dir / "baselines" / "scaled.json").read_text())["scaled"]
    assert picked["name"] == scaled and stages["baselines"]["scaled_by"] == "measured"
    assert picked["measured_ms"] == max(t["measured_ms"] for t in picked["timed"])
    assert "the slowest measured under it" in report
    for name in ("searched", "espcn", "ecbsr-m4c8", "bicubic", "searched-scratch", scaled):
        assert f"| {name} |" in report
    # every trained model had the delivered model's steps: supernet 4 + fine-tune 4
    assert stages["baselines"]["steps"] == 8
    for name in ("espcn", "ecbsr-m4c8", "searched-scratch", scaled):
        assert stages["baselines"]["models"][name]["steps"] == 8
    assert "| 8 (4 supernet) |" in report and "supernet trained 4 steps" in report
    # ECB blocks in every row that has them, started alike; the delivered net is plain
    assert "as ecb blocks collapsed into the plain net it delivers" in report
    assert "ECBSR rows' ECB blocks started as the searched net's (damped)" in report
    saved = {n: json.loads((run_dir / "baselines" / n / "train_config.json").read_text())
             for n in ("ecbsr-m4c8", "searched-scratch")}
    assert saved["ecbsr-m4c8"]["model"]["branch_init"] == "damped"
    assert saved["searched-scratch"]["model"]["rep"] == "ecb"
    assert "rep" not in load_model_file(run_dir / "search" / "model.pt")[0].config()
    bench = stages["bench"]["models"]
    assert set(bench) == {"searched", "espcn", "ecbsr-m4c8", "searched-scratch", scaled}
    assert all(r["median_ms"] > 0 for r in bench.values())
    from srsearch.pipeline.report import bench_line  # the bench's anchors, said in the report

    assert "speed" in stages["bench"] and bench_line(stages["bench"]) in report
    assert (run_dir / "export" / "searched.tflite").is_file()
    assert (run_dir / "psnr_latency.png").is_file()
    assert (run_dir / "crops.png").is_file() and "](crops.png)" in report
    assert "Re-ranked stage 2's best (2) by a 2-step fine-tune" in report
    assert 0 <= stages["latency"]["mape_pct"] and -1 <= stages["latency"]["spearman"] <= 1
    capsys.readouterr()
    # rerun: every stage is skipped, nothing is recomputed
    assert main(["pipeline", *flags]) == 0
    out = capsys.readouterr().out
    assert out.count("(done, skipped)") == 8


def _pipeline_parser():
    import argparse

    from srsearch.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["pipeline"]


def test_pipeline_flags_are_the_config_fields():
    from dataclasses import fields

    from srsearch.pipeline import PipelineConfig

    actions = {a.dest: a for a in _pipeline_parser()._actions}
    names = [f.name for f in fields(PipelineConfig)]
    assert set(actions) - {"help", "config", "run_dir"} == set(names)
    for f in fields(PipelineConfig):
        flag = "--" + f.name.replace("_", "-")
        # a bool field is --flag / --no-flag (argparse.BooleanOptionalAction)
        want = [flag, "--no-" + flag[2:]] if f.type in (bool, "bool") else [flag]
        assert actions[f.name].option_strings == want
        assert f.metadata["help"] and f.metadata["help"] in actions[f.name].help
    # tuples take several values; `devices` a number or a word
    args = _pipeline_parser().parse_args(
        ["--baselines", "espcn", "fsrcnn", "--eval-data", "/a", "/b", "--devices", "auto",
         "--budget-ms", "20", "--scale", "4", "--target", "adb:SERIAL1"]
    )
    assert (args.baselines, args.eval_data, args.devices) == (["espcn", "fsrcnn"], ["/a", "/b"],
                                                             "auto")
    assert (args.budget_ms, args.scale, args.target) == (20.0, 4, "adb:SERIAL1")
    assert _pipeline_parser().parse_args(["--devices", "4"]).devices == 4
    assert _pipeline_parser().parse_args(["--no-from-scratch"]).from_scratch is False


def test_pipeline_flags_override_the_toml_file(tmp_path, image_dir):
    from srsearch.commands.pipeline import config_overrides
    from srsearch.pipeline import PipelineConfig

    toml = tmp_path / "c.toml"
    toml.write_text('budget_ms = 1000.0\nscale = 3\nbaselines = ["espcn"]\n')
    x, y = str(image_dir), "builtin"  # evaluation sets are checked when the config is made
    args = _pipeline_parser().parse_args(
        ["--config", str(toml), "--budget-ms", "20", "--deploy-precision", "int8",
         "--eval-data", x, y]
    )
    cfg = PipelineConfig.from_toml(args.config, config_overrides(args))
    assert cfg.budget_ms == 20.0 and cfg.deploy_precision == "int8"  # flags
    assert cfg.scale == 3 and cfg.baselines == ("espcn",)  # file
    assert cfg.eval_data == (x, y) and cfg.seed == 0  # flag tuple; default
    no_flags = _pipeline_parser().parse_args([])
    assert config_overrides(no_flags) == {}
    assert PipelineConfig.from_toml(None, config_overrides(no_flags)) == PipelineConfig()


def test_pipeline_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('budget = 3\n')
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "unknown keys ['budget']" in capsys.readouterr().err
    bad.write_text('overshoot = 0.3\nstage3_trials = 0\n')  # caught before hours of training
    assert main(["pipeline", "--config", str(bad)]) == 2
    assert "overshoot 0.3" in capsys.readouterr().err


def test_latency_warning_only_when_the_model_missed():
    from srsearch.pipeline import latency_warning

    assert latency_warning(2.9, 10) is None
    assert latency_warning(None, 0) is None  # validation skipped (validate_nets = 0)
    text = latency_warning(21.95, 10)
    assert "10 validation nets by 22 %" in text and "speed changed" in text
    assert "--run-dir" in text and "srsearch latency validate" in text


def test_budget_may_change_until_the_search_runs(tmp_path, monkeypatch):
    """A budget the search refused (infeasible) is retried in the same run dir with another
    one; once the search is done, the config is fixed."""
    from dataclasses import asdict

    import srsearch.pipeline as pipeline
    from srsearch.common.errors import UserError
    from srsearch.pipeline import PipelineConfig, StageLog, run_pipeline

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(asdict(PipelineConfig(budget_ms=1.0))))
    StageLog(run / "stages.json").mark("supernet", {})
    ran = []
    monkeypatch.setattr(pipeline, "STAGES", tuple(
        pipeline.Stage(s.name, lambda cfg, d, n=s.name: ran.append(n) or {})
        for s in pipeline.STAGES))
    run_pipeline(PipelineConfig(budget_ms=25.0), run)
    assert json.loads((run / "config.json").read_text())["budget_ms"] == 25.0
    assert "search" in ran and "supernet" not in ran
    with pytest.raises(UserError, match="budget_ms: 25.0 -> 30.0"):
        run_pipeline(PipelineConfig(budget_ms=30.0), run)  # the search is done now
    with pytest.raises(UserError, match="scale"):
        run_pipeline(PipelineConfig(budget_ms=25.0, scale=3), run)


def test_a_run_from_before_a_key_existed_resumes_as_it_ran(tmp_path, monkeypatch):
    """A finished run's config.json without rerank_family / train_rep / check_speed ran
    without them: it resumes with rerank_family = 0 and check_speed = raw, and the new
    defaults (2, session) are refused by name."""
    from dataclasses import asdict

    import srsearch.pipeline as pipeline
    from srsearch.common.errors import UserError
    from srsearch.pipeline import PipelineConfig, StageLog, run_pipeline

    run = tmp_path / "run"
    run.mkdir()
    old = asdict(PipelineConfig(rerank_family=0, check_speed="raw"))
    del old["rerank_family"], old["train_rep"], old["check_speed"]
    (run / "config.json").write_text(json.dumps(old))
    for stage in pipeline.STAGES:
        StageLog.load(run).mark(stage.name, {})
    monkeypatch.setattr(pipeline, "STAGES", tuple(
        pipeline.Stage(s.name, lambda cfg, d: pytest.fail("nothing should run"))
        for s in pipeline.STAGES))
    run_pipeline(PipelineConfig(rerank_family=0, check_speed="raw"), run)
    with pytest.raises(UserError, match="rerank_family: 0 -> 2"):
        run_pipeline(PipelineConfig(check_speed="raw"), run)
    with pytest.raises(UserError, match="check_speed: 'raw' -> 'session'"):
        run_pipeline(PipelineConfig(rerank_family=0), run)


@pytest.mark.parametrize("budget", [float("inf"), float("nan"), 0.0])
def test_pipeline_budget_must_be_finite(budget):
    from srsearch.common.errors import UserError
    from srsearch.pipeline import PipelineConfig

    with pytest.raises(UserError, match="budget_ms"):
        PipelineConfig(budget_ms=budget)


@pytest.mark.parametrize("field, value, words", [
    ("search_trials", 0, "pipeline config: search_trials 0 is invalid"),  # RunConfig's --trials
    ("budget_floor", 1.0, "pipeline config: budget_floor 1.0 is invalid"),
    ("train_steps", 0, "pipeline config: train_steps 0 is invalid"),  # TrainConfig's max_steps
    ("supernet_steps", 0, "pipeline config: supernet_steps 0 is invalid"),
    ("batch_size", 0, "pipeline config: batch_size 0 is invalid"),
    ("scale", 5, "pipeline config: scale 5 is invalid"),
])
def test_pipeline_values_are_checked_by_their_owner_before_any_work(field, value, words):
    """Each value is checked once, by the config that owns it, built from the pipeline's
    fields when the pipeline config is made; the error names the pipeline's key."""
    from srsearch.common.errors import UserError
    from srsearch.pipeline import PipelineConfig

    with pytest.raises(UserError) as e:
        PipelineConfig(**{field: value})
    assert str(e.value).startswith(words)


@pytest.mark.parametrize("field", ["search_data", "eval_data"])
def test_pipeline_data_read_late_is_checked_before_any_work(field, tmp_path, image_dir):
    """The search's images and the evaluation sets are read after hours of training: a wrong
    spec is refused when the config is made, naming the key."""
    from srsearch.common.errors import UserError
    from srsearch.pipeline import PipelineConfig

    bad = str(tmp_path / "nowhere")
    value = bad if field == "search_data" else (bad,)
    with pytest.raises(UserError, match=f"^{field} {bad}: is neither a known set nor a folder"):
        PipelineConfig(**{field: value})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"^{field} {empty}: no image files"):
        PipelineConfig(**{field: str(empty) if field == "search_data" else (str(empty),)})
    good = str(image_dir) if field == "search_data" else (str(image_dir),)
    assert PipelineConfig(**{field: good}).run_config().search_data == (
        str(image_dir) if field == "search_data" else None)


def test_pipeline_builds_the_search_and_training_configs_from_its_fields():
    from srsearch.pipeline import PipelineConfig

    cfg = PipelineConfig(search_trials=7, train_steps=9, budget_ms=12.0, batch_size=3, seed=4)
    run = cfg.run_config()
    assert (run.trials, run.finetune_steps, run.budget_ms, run.batch_size, run.seed) == (
        7, 9, 12.0, 3, 4)
    assert run.sampler == "evolution" and run.lr == 2e-3  # RunConfig's own defaults
    train = cfg.train_config(9, lr_patch=32)
    assert (train.max_steps, train.lr_patch, train.batch_size, train.val_every) == (9, 32, 3, 2)
