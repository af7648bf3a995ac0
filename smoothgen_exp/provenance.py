"""Where a run came from: config hash, git state of the code, and the run directory's provenance files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parent.parent
# Keys that change how a run is shown, logged or stored, not what it computes.
NON_SEMANTIC = ("hydra", "dry_run", "progress", "logger", "flush_every", "pack_items", "run_id", "summary_radii", "resume",
                "cache_dir", "objective", "objective_constraints", "distributed")


def config_hash(cfg: DictConfig) -> str:
    """sha256 of the resolved config without presentation-only keys (Hydra's own node excluded)."""
    data = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in cfg if k not in NON_SEMANTIC}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True).encode()).hexdigest()


def run_id_of(cfg: DictConfig) -> str:
    """The run's id: `run_id` when set, else the first 12 hex digits of the config hash."""
    return str(cfg.get("run_id") or config_hash(cfg)[:12])


def git_state() -> tuple[str, bool | None]:
    """(HEAD sha, tracked files changed?) of the code's repository; ("unknown", None) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def git_sha() -> str:
    """HEAD with "-dirty" when tracked files changed (the records' git_sha column)."""
    sha, dirty = git_state()
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("smoothgen_exp", "torch", "transformers", "diffusers", "accelerate", "hydra-core", "omegaconf",
                 "numpy", "scipy", "torchmetrics", "wandb"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_info(device) -> dict:
    import platform

    import torch

    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(), gpu_count=torch.cuda.device_count())
    return info


def completed(run_dir: Path, chash: str) -> dict | None:
    """The summary of this very configuration if its job finished (summary.json is written last), else None."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else None
    return summary if summary is not None and summary.get("config_hash") == chash else None


def write_provenance(run_dir: Path, cfg: DictConfig, run_id: str, chash: str, device, world: int,
                     resumed_items: int) -> dict:
    """provenance.json and resolved_config.yaml: what ran, from which code, where."""
    sha, dirty = git_state()
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    provenance = {"run_id": run_id, "config_hash": chash, "git_sha": sha, "git_dirty": dirty,
                  "overrides": overrides, "argv": sys.argv, "packages": package_versions(),
                  **device_info(device), "world_size": world, "resumed_items": resumed_items,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True))
    return provenance
