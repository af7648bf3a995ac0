"""Config composition, validation and the CLI's failure modes."""

import importlib
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from smoothgen_exp.config import CONF_DIR, GROUPS, SCHEMAS, ConfigError, validate

from .conftest import CACHE, cli

OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_validates_and_its_target_resolves(group, option):
    cfg = composed(f"{group}={option}")
    validate(cfg)
    target = cfg[group]._target_
    assert target in SCHEMAS, f"conf/{group}/{option}.yaml: no schema for {target}"
    cls = get_class(target)            # imports the module; instantiates nothing, loads no weights
    assert callable(cls)


def test_every_schema_target_resolves():
    for target in SCHEMAS:
        module, name = target.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), target


def test_every_group_has_options():
    for g in GROUPS:
        assert list((CONF_DIR / g).glob("*.yaml")), g


def test_overrides_reach_the_config():
    cfg = composed("seed=3", "dataset.limit=5", "smoothing.sigma=0.2", "certifier.n0=7", "certifier.n=70",
                   "certifier.alpha=0.01", "certifier.batch_size=16", "logger=wandb")
    validate(cfg)
    assert (cfg.seed, cfg.dataset.limit, cfg.smoothing.sigma) == (3, 5, 0.2)
    assert (cfg.certifier.n0, cfg.certifier.n, cfg.certifier.alpha, cfg.certifier.batch_size) == (7, 70, 0.01, 16)
    assert cfg.logger._target_.endswith("WandbLogger")
    assert composed("logger=none").logger._target_.endswith("NullLogger")


BAD = ["smoothing.sigma=-1", "certifier.alpha=1.5", "certifier.n=0", "certifier.n0=0", "dataset.limit=-3",
       "model=does_not_exist", "certifier.batch_size=0", "certifier.n=abc", "seed=-1"]


def test_an_objective_at_a_radius_the_summary_lacks_fails_in_one_line():
    """The summary writes certified curves at summary_radii only, as f"{r:g}": an optuna search on
    certified_accuracy/0.3 (or /0.250) got NaN from every job, and said so only after each one."""
    from omegaconf import open_dict

    for key in ("certified_accuracy/0.3", "certified_accuracy/0.250", "certified_accuracy"):
        with pytest.raises(ConfigError, match=rf"^objective={key}: the summary has certified_accuracy at "
                                              r"summary_radii only \(0, 0.05, .*, 1\)"):
            validate(composed(f"objective={key}"))
    validate(composed("objective=certified_accuracy/0.25"))
    validate(composed("objective=certified_accuracy/0.3", "summary_radii=[0.3]"))
    cfg = composed()
    with open_dict(cfg):
        cfg.objective_constraints["nominal_certified_fraction/2"] = 0.5
    with pytest.raises(ConfigError, match=r"^objective_constraints.nominal_certified_fraction/2=nominal_"):
        validate(cfg)


def test_a_key_a_model_preset_sets_for_its_own_dataset_says_so():
    """model=tiny_biggan dataset=digits_prompts: 'dataset.classes: unknown key', a key the user never set."""
    from smoothgen_exp.config import compose_overrides

    with pytest.raises(ConfigError, match=r"^dataset.classes: unknown key .*; model=tiny_biggan sets it for "
                                          r"dataset=gan_latents, its preset, which another dataset does not fit$"):
        validate(compose_overrides(["model=tiny_biggan", "dataset=digits_prompts"], hydra_config=True))
    # with the preset's own dataset, a bad value is the user's: no note (review)
    with pytest.raises(ConfigError) as err:
        validate(compose_overrides(["model=tiny_biggan", "dataset.classes=[abc]"], hydra_config=True))
    assert "preset" not in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["summary_radii=0.1"], "summary_radii=0.1: must be a list, e.g. [0.1]"),   # was OmegaConf's "AnyNode is not a ListConfig"
    (["summary_radii=[0.1,b]"], "summary_radii[1]=b: "),                         # was "1=b": the entry's index alone
    (["certifier=center", "certifier.eps_grid=[x]"], "certifier.eps_grid[0]=x: "),
    # diffusers guides above 1 only: 0.5 ran unguided and dropped the negative prompt (image review)
    (["model=tiny_sd", "model.guidance_scale=0.5"], "model.guidance_scale=0.5: must be >= 1 (1: no guidance"),
    # alpha >= 1/2 was accepted: alpha = 0.9 and 50 of 100 votes printed certified=True at confidence 0.1 (review)
    (["certifier.alpha=0.5"], "certifier.alpha=0.5: must lie in (0, 0.5)"),
    (["aggregator.alpha=0.9"], "aggregator.alpha=0.9: must lie in (0, 0.5)"),
    (["certifier.oracle_error=0.01", "certifier.oracle_error_alpha=0.5"], "certifier.oracle_error_alpha=0.5: must lie in (0, 0.5)"),
])
def test_a_bad_entry_or_value_names_itself(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(composed(*overrides))
    assert str(err.value).startswith(message), err.value


@pytest.mark.parametrize("overrides", [["certifier.alpha=0.3", "aggregator.alpha=0.25"],
                                       ["certifier.alpha=0.3", "certifier.oracle_error=0.01",
                                        "certifier.oracle_error_alpha=0.3"]])
def test_alphas_whose_sum_leaves_a_row_confidence_at_most_a_half_are_refused(overrides):
    """Each alpha lies below 1/2, but a row's guarantees hold together with probability 1 minus their sum
    (its `confidence` column): a sum of 1/2 or more is refused before any weights load (review)."""
    from smoothgen_exp.checks import checked_certifier

    cfg = composed(*overrides)
    validate(cfg)                      # each alpha alone is fine
    with pytest.raises(ConfigError, match=r"^a row's guarantees would hold together with probability 0\.(45|399) "):
        checked_certifier(cfg)
    assert checked_certifier(composed("certifier.alpha=0.2", "aggregator.alpha=0.25")).confidence == 0.8


@pytest.mark.parametrize("override", BAD)
def test_bad_values_fail_in_one_line_and_leave_nothing(override, tmp_path):
    run_dir = tmp_path / "run"
    res = cli(override, f"hydra.run.dir={run_dir}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    key = override.split("=")[0]
    assert lines[0].startswith(f"error: {key}"), lines[0]
    assert "Traceback" not in res.stderr
    assert not run_dir.exists()


def test_full_error_env_gives_the_traceback(tmp_path):
    res = cli("smoothing.sigma=-1", f"hydra.run.dir={tmp_path / 'run'}", env={"HYDRA_FULL_ERROR": "1"})
    assert res.returncode != 0 and "Traceback" in res.stderr and "smoothing.sigma" in res.stderr


def test_missing_weights_fail_in_one_line(tmp_path):
    run_dir = tmp_path / "run"
    res = cli(f"model.encoder_path={tmp_path / 'no_weights_here'}", f"hydra.run.dir={run_dir}",
              f"cache_dir={CACHE}", "dataset.limit=1")      # the shared cache: the oracle loads, not trains
    assert res.returncode == 2, res.stderr[-2000:]
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "weights not found" in err[0] and "Traceback" not in res.stderr
    assert not (run_dir / "records").exists()


def test_dry_run_prints_the_config_without_importing_torch(tmp_path):
    run_dir = tmp_path / "run"
    res = cli("dry_run=true", "smoothing.sigma=0.3", f"hydra.run.dir={run_dir}", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.smoothing.sigma == 0.3 and "hydra" not in cfg
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "import time:" in line}
    assert "torch" not in imported and "transformers" not in imported
    assert not run_dir.exists()


def test_dtype_auto_means_float32_on_cpu_and_the_checkpoints_on_an_accelerator():
    """Issue 12.4: `sd15` (and every real model) defaults to dtype=auto, never float16 on a CPU."""
    from hydra import compose, initialize_config_dir

    from smoothgen_exp.backbones.hub import resolve_dtype
    from smoothgen_exp.config import CONF_DIR

    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda:0") == "auto"
    assert resolve_dtype("auto", "cpu", device_map="auto") == "auto"
    assert resolve_dtype("auto", "cuda", accelerator_auto="float16") == "float16"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"                  # an explicit choice is kept
    for name in ("sd15", "llava", "llava16", "llama2_7b", "gpt2", "clip_vision"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            assert compose("config", overrides=[f"model={name}"]).model.dtype == "auto", name


def test_an_unknown_key_of_a_group_fails_in_one_line(tmp_path):
    """Issue 12.4: Hydra's multi-line "Could not override" becomes one line naming the keys that exist."""
    res = cli("model.bogus=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model.bogus: unknown key")
    assert "latent_dim" in lines[0]
    assert "+model.bogus" not in lines[0]          # the schemas refuse added keys too: no such advice
    assert not (tmp_path / "run").exists()


def test_a_misspelt_group_fails_in_one_line_with_a_suggestion(tmp_path, capsys):
    """`certifer=cohen` printed Hydra's five lines ("To append to your config use +certifer=cohen") and
    exited 1 (found by a new user); now one line naming the group meant, exit 2, nothing written."""
    for override in ("certifer=cohen", "certifer.n=100"):
        res = cli(override, f"hydra.run.dir={tmp_path / 'run'}")
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert lines[0].startswith("error: certifer: no such config group or key (did you mean certifier?)")
    assert not (tmp_path / "run").exists()
    from smoothgen_exp.config import preflight

    with pytest.raises(SystemExit):
        preflight(["model=gtp2"])
    assert "error: model=gtp2: no such option (did you mean gpt2?)" in capsys.readouterr().err   # a new user
    with pytest.raises(SystemExit):
        preflight(["smoothing.sigam=0.2"])                                  # a key, too (a new user)
    assert "error: smoothing.sigam: unknown key (did you mean smoothing.sigma?)" in capsys.readouterr().err


def test_a_key_of_another_option_fails_in_one_line_naming_the_option_in_effect(tmp_path):
    res = cli("certifier.cos_min=0.3", f"hydra.run.dir={tmp_path / 'run'}")        # cos_min is feature's
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: certifier.cos_min: unknown key (known keys of certifier=cohen:")
    preset = cli("model=tiny_gpt2", "certifier.bound=betting", f"hydra.run.dir={tmp_path / 'run'}")
    assert preset.returncode == 2 and "known keys of certifier=cohen" in preset.stderr   # the preset's choice
    ok = cli("certifier=feature", "certifier.cos_min=0.3", "dry_run=true")
    assert ok.returncode == 0 and "cos_min: 0.3" in ok.stdout


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("local_joblib", "JoblibLauncher"),
                                             ("local_submitit", "LocalLauncher")])
def test_every_launcher_config_composes_and_passes_the_preflight(launcher, target):
    """The launchers named `joblib` and `submitit_local` clashed with the plugins' own configs, which Hydra
    then used as schemas for ours: both failed to compose, untested (found while checking the preflight,
    which must let `hydra/...` group overrides through)."""
    from smoothgen_exp.config import compose_overrides

    cfg = compose_overrides([f"hydra/launcher={launcher}"], hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher.startswith("local_"):                    # one thread per parallel job
        assert cfg.hydra.job.env_set.OMP_NUM_THREADS == "1"
    res = cli(f"hydra/launcher={launcher}", "dry_run=true")
    assert res.returncode == 0, res.stderr[-500:]


@pytest.mark.parametrize(("device", "message"), [
    ("tpu", "device=tpu: not supported; use auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", "device=cuda:x: not supported"),
    ("cuda:99", "device=cuda:99: this (torch sees no CUDA GPU|machine has)"),
])
def test_a_device_this_machine_cannot_use_fails_in_one_line(device, message):
    """device=tpu or cuda:x ended in a RuntimeError traceback; device=cuda on a CPU build in an
    AssertionError, after setup (found by a new user). Names are checked at validation (without torch:
    dry_run imports none), availability where the device is resolved, before any weights load."""
    from smoothgen_exp.devices import resolve_device
    from smoothgen_exp.errors import ConfigError

    validate(composed("device=cpu"))
    with pytest.raises(ConfigError, match=message):
        validate(composed(f"device={device}"))
        resolve_device(device)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine without a CUDA GPU")
def test_a_device_this_machine_lacks_is_refused_before_the_run_directory_exists(tmp_path):
    """device=cuda on a CPU machine failed in one line but left Hydra's run directory with only its config."""
    res = cli("device=cuda", "dataset.limit=1", f"hydra.run.dir={tmp_path / 'run'}")
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and err == ["error: device=cuda: this torch sees no CUDA GPU (a CPU build, or no "
                                           "driver); use device=auto or cpu"], res.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_sweep_with_a_bad_value_fails_before_its_first_job(tmp_path):
    """`-m smoothing.sigma=0.1,-1` ran job 0 in full, then failed at job 1 (a new user's finding: a long
    sweep could die hours in on a value that could have been checked at the start)."""
    res = cli("-m", "smoothing.sigma=0.1,-1", "debug=smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 2 and res.stderr.strip() == (
        "error: smoothing.sigma=-1: must be >= 0.0 (the sweep's job smoothing.sigma=-1; no job has started)")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(("sweep", "message"), [
    (["-m", "certifier.n=100,5"], r"certifier.n=5: .* use certifier.n >= 10 \(the sweep's job certifier.n=5;"),
    (["-m", "model=tiny_gpt2", "aggregator=majority,mean"], r"aggregator=mean: needs a model with tensor outputs"),
    (["-m", "certifier=center", "smoothing.sigma=0.1,0.2"], r"certifier.n0=20: the centre check needs"),
    (["experiment=scaling_laws", "certifier.n=100,5"], r"certifier.n=5: "),           # the experiment's multirun
    # a sequential target above the ceiling of n: job 0 ran in full, then job 1 failed (new-user review)
    (["-m", "certifier=sequential", "certifier.target_radius=0.1,0.5"],
     r"certifier.target_radius=0.5: above the largest radius .* \(the sweep's job certifier.target_radius=0.5;"),
    # a search space the config does not declare: a traceback under optuna (review), a struct error else
    (["-m", "hydra/sweeper=optuna", 'hydra.sweeper.params={smoothing.sigma: "interval(0.05, 0.5)"}'],
     r"smoothing.sigma is not in this config's search space .* 'smoothing.sigma=interval\(low,high\)' \(optuna\)"),
    (["experiment=sigma_search", 'hydra.sweeper.params={smoothing.sigma: "interval(0.1, 0.2)", certifier.n: "choice(100, 200)"}'],
     r"hydra.sweeper.params: certifier.n is not in"),
])
def test_a_sweep_job_that_cannot_run_is_named_in_one_line(capsys, sweep, message):
    """The checks a run makes before loading, applied to every job (one raised inside a component's
    constructor, center's, printed a traceback in review)."""
    from smoothgen_exp.sweeps import check_swept_values

    with pytest.raises(SystemExit) as stop:
        check_swept_values([*sweep, "debug=smoke"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("sweep", [
    ["model=tiny_gpt2,smollm2", "metrics=text,none"],
    ["model=digit_encoder,tiny_clip_vision", "booster=none,gsb"],
    ["certifier.n=5,10", "certifier.alpha=0.1,0.2"],
    ["experiment=scaling_laws", "certifier.alpha=1e-6", "certifier.n=10000"],   # n replaces the experiment's
    ["experiment=glob(*,exclude=[vlm_rs])", "certifier.n=100"],                # jobs unknown here: left to Hydra
    ["experiment=sigma_search", 'hydra.sweeper.params={smoothing.sigma: "interval(0.1, 0.2)"}'],  # a declared range
])
def test_a_sweep_whose_every_job_is_valid_is_not_refused(sweep):
    """Review counterexamples: checking each value with the other swept keys at their defaults refused
    these (metrics=text beside the default digits model); every job of each is valid. A fixed override of
    a key an experiment sweeps replaces that sweep in every job, as in Hydra's basic sweeper."""
    from smoothgen_exp.sweeps import check_swept_values

    check_swept_values(["-m", *sweep, "debug=smoke"])


def test_help_lists_each_groups_options_and_the_composed_config():
    """--help listed Hydra's _schema_ nodes among the options, and the training entrypoint's task group."""
    res = cli("model=tiny_gpt2", "--help", "-m", "smoothing.sigma=0.1,0.2")      # a sweep's values: left out
    assert res.returncode == 0, res.stderr[-2000:]
    assert "_schema_" not in res.stdout and "\ntask:" not in res.stdout
    assert "\ncertifier: center, cohen, decoding," in res.stdout and "\nexperiment: attacks," in res.stdout
    assert "_target_: smoothgen_exp.models.lm.CausalLM" in res.stdout          # the config with the override


def test_a_refused_run_says_why_in_its_log_file(tmp_path):
    """The one-line error went to stderr only: a cluster job's log file ended with no reason (found by a
    new user). It is written to the run's log file as well."""
    import logging

    from smoothgen_exp.config import exit_on_user_error
    from smoothgen_exp.errors import SmoothgenError

    handler = logging.FileHandler(tmp_path / "job.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit):
            exit_on_user_error(SmoothgenError("model weights for 'x' not found"))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert "error: model weights for 'x' not found" in (tmp_path / "job.log").read_text()


def test_constraints_stay_out_of_a_jobs_directory_name():
    """`+objective_constraints.k=v` entered the directory name (exclude_keys matches whole keys): adding a
    constraint to a finished sweep recomputed every job (found by a new user)."""
    from smoothgen_exp.config import job_dirname

    assert job_dirname("+objective_constraints.retention_digit_prob=0.8,smoothing.sigma=0.1") == "smoothing.sigma=0.1"
    assert job_dirname("summary_radii=[0.1,0.25],smoothing.sigma=0.1") == "summary_radii=[0.1,0.25],smoothing.sigma=0.1"
    assert job_dirname("") == job_dirname("+objective_constraints.a=1") == "default"


def test_a_search_with_no_feasible_trial_says_so(tmp_path, caplog):
    """New-user review: every trial of experiment=sigma_search missed its constraint (-inf), and
    optimization_results.yaml, which the README says holds the best sigma, still named one, silently."""
    from omegaconf import OmegaConf

    from smoothgen_exp.callbacks import SearchOutcome

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    path = tmp_path / "optimization_results.yaml"
    path.write_text("name: optuna\nbest_params:\n  smoothing.sigma: 0.5578\nbest_value: -.inf\n")
    SearchOutcome().on_multirun_end(config)
    assert OmegaConf.load(path).feasible is False and "not feasible" in caplog.text
    path.write_text("name: optuna\nbest_params:\n  smoothing.sigma: 0.31\nbest_value: 0.42\n")
    SearchOutcome().on_multirun_end(config)
    assert "feasible" not in OmegaConf.load(path)
    SearchOutcome().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))


def test_a_constraint_is_set_without_a_plus():
    """New-user review: `objective_constraints.k=v` gave Hydra's six-line "not in struct" error on the
    default config (its constraints are empty), and `+objective_constraints.k=v` failed where an experiment
    already sets k; `python -m smoothgen_exp` takes the plain form either way."""
    for base in ([], ["experiment=sigma_search"]):
        res = cli(*base, "objective_constraints.retention_digit_prob_noisy=0.7", "dry_run=true")
        assert res.returncode == 0, res.stderr
        assert "objective_constraints:\n  retention_digit_prob_noisy: 0.7" in res.stdout


def test_a_configuration_that_certifies_nothing_fails_before_its_run_directory(tmp_path):
    """New-user review: `certifier.n=5` logged "run ... in <dir>" before its one-line error and left the
    run directory behind; the certifier checks now run in the callback that runs before Hydra creates it."""
    res = cli("certifier.n=5", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2 and "run " not in res.stdout, res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: certifier.n=5: at alpha=0.001 no item can certify")
    assert not (tmp_path / "run").exists()
    # with two processes the launcher checks it once: each worker printed it, then the launcher its own line
    res = cli("certifier.n=5", "distributed.num_processes=2", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: certifier.n=5: ")
    assert not (tmp_path / "run").exists()


def test_a_malformed_override_fails_in_one_line_naming_it(capsys):
    """New-user review: `smoothing.sigma` (no =) and `smoothing.sigma=[0.1` printed Hydra's three lines, the
    second without naming the override."""
    from smoothgen_exp.config import preflight

    for arg, why in (("smoothing.sigma", "missing EQUAL"), ("smoothing.sigma=[0.1", "no viable alternative")):
        with pytest.raises(SystemExit) as stop:
            preflight(["dataset.limit=2", arg])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
        assert err.startswith(f"error: {arg}: not an override key=value ({why}")
