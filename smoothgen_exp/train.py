"""`python -m smoothgen_exp.train task=... [overrides]`: train what the runner needs, ahead of time.

The runner's counterpart (lightning-hydra-template's train/eval split): the same config groups for the
components (`model`, `oracle`), a `task` group naming what to train, `cache_dir` where the weights go
(safetensors keyed by the hash of their config, with a resumable checkpoint after every epoch), and
`retrain=true` to train again. Returns (and writes to `train.json` in its run directory) what it trained.
"""

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from smoothgen_exp.config import CONF_DIR, exit_on_user_error, validate_groups


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    try:
        validate_groups(cfg, ("task", "model", "oracle", "booster"))   # one-line errors, before anything trains
        import torch
        from hydra.utils import instantiate

        import smoothgen_exp.training  # noqa: F401  (registers the trainers)

        device = torch.device(cfg.device)
        result = instantiate(cfg.task).run(cfg, device)
        out = Path(HydraConfig.get().runtime.output_dir) / "train.json"
        from smoothgen_exp.records import strict_json

        result_json = strict_json(result)          # a heldout NaN is written as null, never as a bare NaN
        config = strict_json(OmegaConf.to_container(cfg, resolve=True))
        out.write_text(json.dumps({**result_json, "config": config}, indent=2, allow_nan=False))
        print(json.dumps(result_json, allow_nan=False))
        return result
    except Exception as err:
        exit_on_user_error(err)
        raise


# groups conf/train.yaml holds only for what a model preset sets for its runs: no task reads them
RUN_ONLY = ("dataset", "smoothing", "aggregator", "certifier", "metrics")


def check_task(argv: list[str]) -> None:
    """`task=<name>` naming no conf/task/ option fails in one line (Hydra's message lists its schemas too),
    as does a setting no training reads (`smoothing.sigma=...` trained exactly what it would without) and
    a `model.key=...` (oracle, booster, task) that no option of the group has (Hydra's spans six lines)."""
    from smoothgen_exp.config import group_keys, unknown_key_error

    tasks = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
    for arg in argv:
        if arg.startswith("task=") and arg.split("=", 1)[1] not in tasks:
            print(f"error: {arg}: no such task (available: {', '.join(tasks)})", file=sys.stderr)
            sys.exit(2)
        name = arg.split("=", 1)[0]
        group, _, key = name.partition(".")
        if group.lstrip("+~") in RUN_ONLY:
            print(f"error: {arg}: no training reads it (the weights depend on task.*, model.*, oracle.* and "
                  "booster.* only); give it to the run: python -m smoothgen_exp ...", file=sys.stderr)
            sys.exit(2)
        if group in ("model", "oracle", "booster", "task") and key and "=" in arg:
            known = group_keys(group)
            if key.split(".")[0] not in known:
                print(unknown_key_error(group, key.split(".")[0], known, f"conf/{group}/ options"), file=sys.stderr)
                sys.exit(2)


def print_train_help(argv: list[str]) -> None:
    """`--help`: the groups a training reads, with their options, and the config the other arguments compose."""
    from smoothgen_exp.config import compose_overrides, print_help

    print_help("python -m smoothgen_exp.train task=<task> [group=option ...] [key=value ...]    (--hydra-help: Hydra's flags)",
               ("task", "model", "oracle", "booster"),
               compose_overrides([a for a in argv if not a.startswith("-")], config_name="train"))


if __name__ == "__main__":
    check_task(sys.argv[1:])
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print_train_help(sys.argv[1:])
        sys.exit(0)
    main()
    sys.exit(0)
