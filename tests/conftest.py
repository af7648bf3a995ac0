"""Shared fixtures. Trained weights of the embedded default are cached where `make run` finds them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="session")
def oracle():
    from smoothgen_exp.oracles.digits import DigitClassifier

    return DigitClassifier(cache_dir=str(CACHE))


@pytest.fixture(scope="session")
def t2i(oracle):
    from smoothgen_exp.models.digits import DigitsT2I

    return DigitsT2I(cache_dir=str(CACHE))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, t2i):
    """One tiny end-to-end CLI run of the default, shared by the tests that inspect its outputs."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    res = cli(*TINY, f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res
