"""Named experiments compose, run as sweeps, and their scripts produce the figures and tables."""

import json
import math
import subprocess
import sys

import pytest

from .conftest import CACHE, REPO, cli


def test_scaling_laws_experiment_smoke(tmp_path, t2i):
    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=scaling_laws", "certifier.n=10,100", "dataset.limit=3", "aggregator.n=20",
              "progress=false", f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p.parent.parent.name for p in sweep.rglob("summary.json"))      # <overrides>/<run_id>
    assert runs == ["aggregator.n=20,certifier.n=10,dataset.limit=3", "aggregator.n=20,certifier.n=100,dataset.limit=3"]
    res = subprocess.run([sys.executable, "scripts/scaling_laws.py", str(sweep), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("scaling_ratio.png", "scaling_certified_accuracy.png", "scaling_accuracy_drop.png",
                 "scaling_time.png", "scaling_laws.md", "scaling_laws.tex", "scaling_laws.csv"):
        assert (out / name).stat().st_size > 100, name
    assert "ratio_predicted" in (out / "scaling_laws.md").read_text()
    # the table's ACR is the runs' own; avg_radius (the radius Cor. 5.4 concerns) also counts wrong classes
    # and says so (found by a new user: avg_radius 0.75 beside certified accuracy 0)
    import json

    import pandas as pd

    table = pd.read_csv(out / "scaling_laws.csv").set_index("n")
    for summary in sweep.rglob("summary.json"):
        n = int(summary.parent.parent.name.split("certifier.n=")[1].split(",")[0])
        acr = json.loads(summary.read_text())["average_certified_radius"]
        assert abs(table.loc[n, "average_certified_radius"] - acr) < 1e-9, n
    assert (table.average_certified_radius <= table.avg_radius + 1e-12).all()
    # below Cor. 5.4's range (n < (1.64 z)^2, about 29 at alpha = 0.001) no prediction is printed, not 0
    assert table.prediction_in_range.tolist() == [False, True] and table.ratio_predicted.isna().tolist() == [True, False]
    assert table.loc[100, "ratio_predicted"] == 1.0
    assert "right or wrong" in (out / "scaling_laws.md").read_text()


def test_every_experiment_composes_and_validates():
    from hydra import compose, initialize_config_dir

    from smoothgen_exp.config import CONF_DIR, validate

    names = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert {"scaling_laws", "attacks", "smoothgen_quality"} <= set(names)
    for name in names:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={name}"])
        validate(cfg)


def test_attacks_experiment_smoke(tmp_path, t2i):
    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=attacks", "attack=pgd", "attack.eps=0.05,0.5", "attack.steps=3", "attack.m=4",
              "attack.eval_n=100", "dataset.limit=2", "certifier.n=200", "progress=false", f"cache_dir={CACHE}",
              f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([sys.executable, "scripts/attack_figures.py", str(sweep), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "attacks.png").stat().st_size > 1000
    text = (out / "attacks.md").read_text()
    assert "attack_success_rate_smoothed" in text and "±" in text


def test_sigma_search_with_optuna_returns_the_objective(tmp_path, t2i):
    """Issue 12.4: `main` returns the summary's objective, and an optuna sweep over sigma maximises it
    subject to the quality constraint (infeasible trials score -inf)."""
    import yaml

    sweep = tmp_path / "sweep"
    res = cli("experiment=sigma_search", "hydra.sweeper.n_trials=2", "dataset.limit=2", "certifier.n0=20",
              "certifier.n=100", "aggregator.n=20", "metrics.samples_per_item=4", "progress=false",
              f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 2
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and "smoothing.sigma" in result["best_params"]
    import json

    values = []
    for path in summaries:
        s = json.loads(path.read_text())
        ok = s.get("retention_digit_prob_noisy", float("nan")) >= 0.8
        values.append(s["average_certified_radius"] if ok else float("-inf"))
    assert result["best_value"] == max(values)


def test_a_search_for_a_misspelt_objective_stops_at_its_first_trial(tmp_path, t2i):
    """Every trial of an Optuna search for a key no summary has scored NaN (with a warning per trial): the
    whole search ran for nothing. It now stops after the first trial, naming the keys spelt like it."""
    sweep = tmp_path / "sweep"
    res = cli("experiment=sigma_search", "objective=average_certifed_radius", "hydra.sweeper.n_trials=3",
              "dataset.limit=2", "certifier.n0=20", "certifier.n=100", "aggregator.n=20", "metrics.samples_per_item=4",
              "progress=false", f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2 and len(list(sweep.rglob("summary.json"))) == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: objective=average_certifed_radius: no such key in this run's summary (keys like it: "
        "average_certified_radius); the search stops at its first trial")
    # a misspelt constraint stops it the same way (the same ConfigError from objective_value, raised only in
    # a search's first trial: checked here without a second search)
    from smoothgen_exp import outcome
    from smoothgen_exp.errors import ConfigError

    summary = json.loads(next(sweep.rglob("summary.json")).read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outcome, "searching", lambda: True)
        with pytest.raises(ConfigError, match="objective_constraints: retention_digit_probb is no key .*"
                                              "the search stops at its first trial"):
            outcome.objective_value(summary, "average_certified_radius", {"retention_digit_probb": 0.8})
    assert outcome.objective_value(summary, "average_certified_radius", {"retention_digit_probb": 0.8}) == -math.inf


def test_objective_value_applies_the_constraints(caplog, monkeypatch):
    import logging
    import math

    from smoothgen_exp.outcome import objective_value

    summary = {"average_certified_radius": 0.3, "retention_digit_prob": 0.85, "acc": math.nan}
    assert objective_value(summary, "average_certified_radius", {}) == 0.3
    assert objective_value(summary, "average_certified_radius", {"retention_digit_prob": 0.8}) == 0.3
    assert objective_value(summary, "average_certified_radius", {"retention_digit_prob": 0.9}) == -math.inf
    assert objective_value(summary, "average_certified_radius", {"acc": 0.1}) == -math.inf   # NaN misses
    assert math.isnan(objective_value({"nominal_average_certified_radius": 1.0}, "average_certified_radius", {}))
    assert objective_value(None, "average_certified_radius", {}) is None
    nested = {"certified_accuracy": {"0.25": 0.5}}
    assert objective_value(nested, "certified_accuracy/0.25", {}) == 0.5
    assert math.isnan(objective_value(nested, "certified_accuracy", {}))               # a dict, not a number
    # a run without class certificates lacks the default objective: a note where a sweeper reads it, a debug
    # line in a plain run (it printed "returning NaN" after every center or GAN run; a new user); a chosen
    # objective: a warning
    from smoothgen_exp import outcome

    for reads, note in ((False, "DEBUG"), (True, "INFO")):
        monkeypatch.setattr(outcome, "sweeper_reads", lambda reads=reads: reads)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="smoothgen_exp.outcome"):
            objective_value({"mean_bound_tv_eps0.1": 0.2}, "average_certified_radius", {})
            objective_value({"mean_bound_tv_eps0.1": 0.2}, "retention_fid", {})
        assert [r.levelname for r in caplog.records] == [note, "WARNING"]
    # review: a trial that misses a constraint scored -inf under direction=minimize too, the best value there
    from types import SimpleNamespace

    monkeypatch.setattr(outcome, "searching", lambda: False)
    for direction, worst in (("minimize", math.inf), ("maximize", -math.inf)):
        monkeypatch.setattr(outcome, "_reading_sweep", lambda d=direction: SimpleNamespace(sweeper={"direction": d}))
        assert objective_value(summary, "average_certified_radius", {"retention_digit_prob": 0.9}) == worst


def test_missing_oracle_and_model_weights_are_named_in_one_line():
    """model=sd15 named the CLIP oracle's missing weights and, only on the next try, the SD weights (found by
    a new user): both are named at once, through Hydra's InstantiationException wrapper."""
    import pytest

    from smoothgen_exp.checks import oracle_naming_every_missing_weight
    from smoothgen_exp.errors import WeightsNotFound

    def fails(name):
        def load():
            try:
                raise WeightsNotFound(f"{name} weights not found")
            except WeightsNotFound as err:
                raise RuntimeError("Error in call to target") from err     # as hydra.utils.instantiate wraps it
        return load

    assert oracle_naming_every_missing_weight(lambda: "oracle", fails("model")) == "oracle"   # model not tried
    with pytest.raises(WeightsNotFound, match="^model weights not found; and oracle weights not found$"):
        oracle_naming_every_missing_weight(fails("oracle"), fails("model"))
    with pytest.raises(RuntimeError) as only_oracle:                                 # the model loads
        oracle_naming_every_missing_weight(fails("oracle"), lambda: "model")
    assert str(only_oracle.value.__cause__) == "oracle weights not found"


def test_a_misspelt_constraint_or_objective_is_named_with_the_keys_like_it(caplog):
    """A misspelt constraint key made every Optuna trial -inf with an INFO line, and a misspelt objective
    said "keys like it: none" (found by a new user)."""
    import logging
    import math

    from smoothgen_exp.outcome import objective_value

    summary = {"average_certified_radius": 0.3, "retention_digit_prob": 0.85}
    with caplog.at_level(logging.INFO, logger="smoothgen_exp.outcome"):
        assert objective_value(summary, "average_certified_radius", {"retention_digit_prb": 0.8}) == -math.inf
        assert math.isnan(objective_value(summary, "average_certifed_radius", {}))
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "retention_digit_prb is not in the summary (keys like it: retention_digit_prob)" in caplog.records[0].message
    assert "(keys like it: average_certified_radius)" in caplog.records[1].message
    caplog.clear()                       # a key whose value is null (NaN in summary.json) is not met, not misspelt
    with caplog.at_level(logging.INFO, logger="smoothgen_exp.outcome"):
        assert objective_value({**summary, "retention_fid": None}, "average_certified_radius",
                               {"retention_fid": 0.8}) == -math.inf
    assert [r.levelname for r in caplog.records] == ["INFO"]


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "scripts").glob("*.py")))
def test_every_script_help_prints_its_defaults(script, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "(default: " in text, text
    if script == "bound_widths.py":            # a default of 0 (falsy) is shown too
        assert "(default: 0)" in text
