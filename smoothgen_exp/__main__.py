"""`python -m smoothgen_exp [overrides]`: compose and validate the config, then run one job.

Nothing heavy is imported here: torch and transformers load inside `run`, after validation.
Under torchrun / accelerate launch every rank computes the same deterministic run directory; ranks
other than 0 leave Hydra's .hydra/ and log file to rank 0.
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from smoothgen_exp.config import exit_on_user_error, preflight, print_config, validate


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the run's headline metric (`objective`, for Hydra sweepers such as optuna)."""
    try:
        validate(cfg)
        if cfg.dry_run:
            print_config(cfg)
            return None
        from smoothgen_exp.checks import objective_value
        from smoothgen_exp.run import run

        return objective_value(run(cfg), cfg.objective, cfg.objective_constraints)
    except Exception as err:
        exit_on_user_error(err)
        raise


if __name__ == "__main__":
    preflight(sys.argv[1:])
    if int(os.environ.get("RANK", "0")) > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    main()
