"""Shared fixtures. Trained weights of the embedded default are cached where `make run` finds them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent

# pytest-xdist runs one worker per core; each worker (and every CLI run it starts) would otherwise start
# one torch/OpenMP thread per core, and oversubscribed OpenMP threads spin: a CLI run that takes 36 s
# alone took 113 s beside another worker. Give each worker its share of the cores. Training always runs on
# weights.TRAIN_THREADS threads (the same weights everywhere), more than a worker's share: idle OpenMP
# threads then sleep instead of spinning (OMP_WAIT_POLICY is read when torch loads its OpenMP).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(_threads)

# Under `--dist loadfile` each file is one work unit. xdist hands the units out with the most tests first,
# which left test_scale (6 tests, 150 s) to the end, run alone while the other worker idled for a minute.
# The Makefile turns that order off (--no-loadscope-reorder) and the longest files go first (seconds on a
# clean clone, 2026-12-07): the short ones then even out the end. A file not listed takes under 45 s.
FILE_SECONDS = {"test_scale": 150, "test_config": 130, "test_diffusion": 118, "test_experiments": 88,
                "test_lm": 77, "test_packing": 75, "test_gsb": 69, "test_smollm2": 62}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.stem, 0))      # stable: files stay whole


CACHE = Path(os.environ.get("SMOOTHGEN_TEST_CACHE", REPO / "outputs" / "cache"))
# Small enough for CI, large enough to give non-trivial certificates.
TINY = ["dataset.limit=3", "certifier.n0=20", "certifier.n=200", "aggregator.n=20",
        "certifier.batch_size=128", "progress=false", f"cache_dir={CACHE}"]


def cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m smoothgen_exp ARGS` from the repository root, never reading stdin."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("WANDB_MODE", "WANDB_API_KEY", "HYDRA_FULL_ERROR")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "smoothgen_exp", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def drive(program, votes) -> tuple:
    """Run a certifier's sampling program on these class votes (a tensor), in order; returns (its value,
    samples drawn)."""
    from smoothgen_exp.packing import Samples

    done = 0
    try:
        draw = next(program)
        while True:
            labels = votes[done:done + draw.num]
            done += draw.num
            draw = program.send(Samples.of_labels(draw, labels))
    except StopIteration as stop:
        return stop.value, done


def run_in_process(*args: str, run_dir: Path) -> tuple:
    """One run of `python -m smoothgen_exp ARGS` inside this process: the config composed from the same
    overrides and Hydra's runtime config in place (so the rows name the chosen options), then `run`.
    For fixtures that run many options: a fresh interpreter spends about 4 s of each run importing torch
    and transformers. The CLI itself (preflight, logging, exit codes) is tested through `cli`.
    Returns (records DataFrame, summary dict)."""
    import pandas as pd
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.run import run

    cfg = compose_overrides([*args, f"hydra.run.dir={run_dir}"], hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        run(cfg, run_dir)
    finally:
        HydraConfig.instance().cfg = None
    return pd.read_parquet(Path(run_dir) / "records"), json.loads((Path(run_dir) / "summary.json").read_text())


@pytest.fixture(scope="session")
def oracle():
    import smoothgen_exp.training  # noqa: F401  (trains on first use)
    from smoothgen_exp.oracles.digits import DigitClassifier

    return DigitClassifier(cache_dir=str(CACHE))


@pytest.fixture(scope="session")
def t2i(oracle):
    from smoothgen_exp.models.digits import DigitsT2I

    return DigitsT2I(cache_dir=str(CACHE))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, t2i):
    """One tiny end-to-end CLI run of the default, shared by the tests that inspect its outputs (and, under
    pytest-xdist, by every worker of the session: the first one runs it, the others wait and read it)."""
    shared = shared_dir(tmp_path_factory)
    run_dir = shared / "tiny" / "run"
    with FileLock(str(shared / "tiny.lock")):
        done = run_dir / "cli.json"
        if not done.exists():
            res = cli(*TINY, f"hydra.run.dir={run_dir}")
            assert res.returncode == 0, res.stderr[-3000:]
            done.write_text(json.dumps({"stdout": res.stdout, "stderr": res.stderr, "returncode": res.returncode}))
    saved = json.loads((run_dir / "cli.json").read_text())
    return run_dir, subprocess.CompletedProcess([], saved["returncode"], saved["stdout"], saved["stderr"])


def makefile_args(name: str) -> list[str]:
    """The overrides a Makefile variable holds (the smoke targets' sizes, read rather than copied)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{name} :="))
    return [arg.strip("'") for arg in line.split(":=", 1)[1].split()]


def llm_attack_sweep(tmp_path: Path, *args: str) -> tuple:
    """`make table-llm-smoke`'s attack half: experiment=llm_attacks at the Makefile's smoke size (ARGS added)
    under tmp_path/sweep, then scripts/attack_figures.py and scripts/llm_quality.py into tmp_path/tables.
    Checks what holds on any model: no certificate violation, every attack within its eps, the attack
    table's violation counts 0, both figures drawn. Returns (rows, the smoothed rows attacked at eps 0.02)."""
    import pandas as pd

    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=llm_attacks", *args, *makefile_args("LLM_ATTACK_SMOKE"), "progress=false",
              f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = pd.concat([pd.read_parquet(d) for d in sweep.rglob("records")])
    sm = rows[rows.variant == "smoothed"]
    assert not sm.certificate_violation.fillna(False).any()
    assert (rows.attack_distance <= rows.attack_eps * (1 + 1e-5)).all()
    for script, extra in (("attack_figures.py", ["--name", "llm_attacks", "--radius", "0.05"]), ("llm_quality.py", [])):
        res = subprocess.run([sys.executable, f"scripts/{script}", str(sweep), "--out", str(out), *extra], cwd=REPO,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    attacks = pd.read_csv(out / "llm_attacks.csv")
    assert attacks.filter(like="certificate_violations").iloc[:, 0].astype(str).str.startswith("0").all()
    assert (out / "llm_attacks.png").stat().st_size > 100 and (out / "llm_quality.png").stat().st_size > 100
    return rows, sm[sm.attack_eps == 0.02]


def shared_dir(tmp_path_factory) -> Path:
    """A directory every pytest-xdist worker of this session sees (this process's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
