"""Where a run came from: config hash and git state of the code."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parent.parent
# Keys that change how a run is shown or logged, not what it computes.
NON_SEMANTIC = ("hydra", "dry_run", "progress", "logger", "flush_every", "run_id", "summary_radii")


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved config without presentation-only keys."""
    data = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in NON_SEMANTIC}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True).encode()).hexdigest()


def git_sha() -> str:
    """HEAD of the code's repository, with "-dirty" if tracked files changed; "unknown" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")
