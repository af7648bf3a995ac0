"""`python -m smoothgen_exp [overrides]`: compose and validate the config, then run one job.

Nothing heavy is imported here: torch and transformers load inside `run`, after validation.
Under torchrun / accelerate launch every rank computes the same deterministic run directory; ranks
other than 0 leave Hydra's .hydra/ and log file to rank 0. `distributed.num_processes=N` starts those
N ranks itself (torch.distributed.run), so one command runs one run on several processes.
"""

import os
import shutil
import subprocess
import sys

import hydra
from omegaconf import DictConfig

from smoothgen_exp.config import (
    GROUPS,
    compose_overrides,
    constraint_overrides,
    exit_on_user_error,
    preflight,
    print_config,
    print_help,
    validate,
    without_sweeps,
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the run's headline metric (`objective`, for Hydra sweepers such as optuna)."""
    try:
        validate(cfg)
        if cfg.dry_run:
            print_config(cfg)
            return None
        from smoothgen_exp.outcome import objective_value
        from smoothgen_exp.run import run

        return objective_value(run(cfg), cfg.objective, cfg.objective_constraints)
    except Exception as err:
        exit_on_user_error(err)
        raise


def requested_processes(argv: list[str]) -> int:
    """`distributed.num_processes` from the command line (1 when absent); `auto`: the visible GPUs."""
    value = next((a.split("=", 1)[1] for a in argv if a.startswith("distributed.num_processes=")), "1")
    if value != "auto":
        return int(value) if value.isdigit() else 1            # bad values: validation reports them
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 1
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return max(1, sum(line.startswith("GPU ") for line in out.stdout.splitlines()))


def launch(processes: int, argv: list[str]) -> int:
    """Validate once here (one error line, not one per worker), then run `processes` workers of this
    very command through torch.distributed.run; they split the items of one run directory."""
    if any(a in ("-m", "--multirun") for a in argv):
        print("error: distributed.num_processes runs one run on several processes; a sweep runs its jobs "
              "through hydra/launcher=local_joblib|local_submitit|slurm instead", file=sys.stderr)
        return 2
    try:
        cfg = compose_overrides([a for a in argv if not a.startswith(("hydra.", "-"))])
        validate(cfg)
        from smoothgen_exp.checks import checked_certifier

        checked_certifier(cfg)          # parts that do not fit, n that certifies nothing: before any worker
    except Exception as err:
        exit_on_user_error(err)
        raise
    from torch.distributed.run import main as torchrun

    from smoothgen_exp.distributed import LAUNCHER

    os.environ[LAUNCHER] = str(os.getpid())      # the workers die with this process (die_with_launcher)
    try:
        torchrun(["--standalone", f"--nproc_per_node={processes}", "-m", "smoothgen_exp", *argv])
    except Exception as err:          # ChildFailedError: the workers printed their own errors
        print(f"error: a worker process failed ({type(err).__name__})", file=sys.stderr)
        return 1
    return 0


def print_runner_help(argv: list[str]) -> None:
    """`--help`: each group's options (Hydra's own help also lists the training entrypoint's `task` group)
    and the config that the other arguments compose."""
    print_help("python -m smoothgen_exp [group=option ...] [key=value ...]    (-m: a sweep; --hydra-help: Hydra's flags)",
               (*GROUPS, "experiment", "debug"), compose_overrides(without_sweeps(argv)), "; a sweep's values left out")


if __name__ == "__main__":
    sys.argv[1:] = constraint_overrides(sys.argv[1:])
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        preflight([a for a in sys.argv[1:] if a not in ("--help", "-h", "-m", "--multirun")])
        print_runner_help(sys.argv[1:])
        sys.exit(0)
    preflight(sys.argv[1:])
    if "LOCAL_RANK" not in os.environ and any(a in ("-m", "--multirun") or a.startswith(("experiment=", "hydra.mode="))
                                              for a in sys.argv[1:]):    # a sweep (experiments may set one)
        from smoothgen_exp.sweeps import check_swept_values

        check_swept_values(sys.argv[1:])
    if "LOCAL_RANK" not in os.environ and (n := requested_processes(sys.argv[1:])) > 1:
        sys.exit(launch(n, sys.argv[1:]))
    if "LOCAL_RANK" in os.environ:
        from smoothgen_exp.distributed import die_with_launcher

        die_with_launcher()
    if (rank := int(os.environ.get("RANK", "0"))) > 0:       # rank 0 logs the run; the others only warnings
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra.job_logging.root.level=WARNING",
                     f"hydra.job_logging.formatters.simple.format='[rank {rank}][%(levelname)s] %(message)s'"]
    main()
