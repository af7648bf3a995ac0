"""Sweeps, multi-process runs, resume after kill -9, provenance and the table script."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from .conftest import CACHE, REPO, cli

VOLATILE = ("time_", "git_sha")


def rows(run_dir) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "records")
    return df[[c for c in df.columns if not c.startswith(VOLATILE)]].sort_values(["item_id", "variant"]) \
        .reset_index(drop=True)


@pytest.mark.slow     # 30 s; multiruns and their tables also run in the table smokes (attacks, t2i_digits, vae)
def test_two_by_two_multirun_gives_four_run_dirs_and_a_table(tmp_path, t2i):
    sweep, tables = tmp_path / "sweep", tmp_path / "tables"
    res = cli("-m", "smoothing.sigma=0.05,0.1", "certifier.n=50,100", "debug=smoke", f"cache_dir={CACHE}",
              f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = sorted(sweep.rglob("summary.json"))
    assert len(summaries) == 4
    names = {p.parent.parent.name for p in summaries}            # <overrides>/<run_id>
    assert names == {f"certifier.n={n},smoothing.sigma={s}" for n in (50, 100) for s in (0.05, 0.1)}
    res = subprocess.run([sys.executable, "scripts/make_table.py", str(sweep), "--out", str(tables),
                          "--name", "grid"], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    table = (tables / "grid.md").read_text()
    assert table.count("\n|") >= 5 and "±" in table and "certifier.n" in table and "smoothing.sigma" in table
    for ext in ("tex", "csv"):
        assert (tables / f"grid.{ext}").exists()
    res = subprocess.run([sys.executable, "scripts/plot.py", str(sweep), "--out", str(tables), "--name", "grid"],
                         cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {"grid_certified_accuracy.png", "grid_radius_vs_n.png", "grid_time_vs_n.png"} <= \
        {p.name for p in tables.iterdir()}
    # the same multirun again: every job is complete and skipped, nothing is rewritten
    mtimes = [p.stat().st_mtime for p in summaries]
    again = cli("-m", "smoothing.sigma=0.05,0.1", "certifier.n=50,100", "debug=smoke", f"cache_dir={CACHE}",
                f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and (again.stdout + again.stderr).count("already complete in") == 4   # the log line
    assert [p.stat().st_mtime for p in summaries] == mtimes


def test_glob_over_experiments_with_debug_smoke(tmp_path, t2i):
    # vlm_rs (LLaVA) and t2i_quality (SD 1.5) need real weights; table-vlm-smoke and table-t2i-smoke run them
    # tiny. llm_rs, llm_attacks and llm_quality (sweeps on the real SmolLM2) run as table-llm-smoke in
    # tests/test_smollm2.py; t2i_digits (the real diffusion model, 48 runs) runs as table-t2i-digits-smoke in
    # tests/test_digits_diffusion.py (slow; the fast tests run the tiny model once); fs_gsb and fs_gsb_attacks
    # (whose default booster trains for about a minute) run at smoke size with a quickly trained booster in
    # tests/test_gsb.py; vae_table (whose VAE and SRL encoder train for minutes) runs as table-vae-smoke with a
    # quickly trained VAE in tests/test_vae.py (slow); attacks, sigma_search and scaling_laws (most of
    # this test's time when it ran them) run on their own in tests/test_experiments.py
    res = cli("-m", "experiment=glob(*,exclude=[vlm_rs,t2i_quality,llm_rs,llm_attacks,llm_quality,t2i_digits,"
              "fs_gsb,fs_gsb_attacks,vae_table,attacks,sigma_search,scaling_laws])",
              "debug=smoke", f"cache_dir={CACHE}",
              f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    launched = [line for line in (res.stdout + res.stderr).splitlines() if "experiment=" in line and "#" in line]
    assert [line.split("experiment=")[1].split()[0] for line in launched] == ["smoothgen_quality"]
    assert list(tmp_path.rglob("summary.json"))


def test_run_dir_is_deterministic_and_holds_provenance(tmp_path, t2i):
    args = ["debug=smoke", f"cache_dir={CACHE}"]
    first = cli(*args, "seed=11", f"hydra.run.dir={tmp_path}/${{sg.run_id:}}")
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    prov = json.loads((run_dir / "provenance.json").read_text())
    for key in ("run_id", "config_hash", "git_sha", "git_dirty", "overrides", "packages", "device", "world_size"):
        assert key in prov, key
    assert prov["run_id"] == run_dir.name and "seed=11" in prov["overrides"]
    assert {"torch", "transformers", "diffusers", "hydra-core"} <= set(prov["packages"])
    assert (run_dir / "resolved_config.yaml").exists() and (run_dir / ".hydra" / "overrides.yaml").exists()
    again = cli(*args, "seed=11", f"hydra.run.dir={tmp_path}/${{sg.run_id:}}")
    assert "already complete" in again.stdout + again.stderr
    assert "certified accuracy" in again.stdout and "abstain_rate" in again.stdout    # its results, shown again
    # the id is the config's hash: the one composed here is the CLI's, and another seed is another run
    from smoothgen_exp.config import compose_overrides
    from smoothgen_exp.provenance import run_id_of

    assert run_id_of(compose_overrides([*args, "seed=11"])) == run_dir.name
    assert run_id_of(compose_overrides([*args, "seed=12"])) != run_dir.name


def test_two_processes_give_the_rows_of_one(tmp_path, t2i):
    """Packed over two processes = one process, one item at a time."""
    common = ["dataset.limit=6", "certifier.n=200", "certifier.n0=20", "aggregator.n=20", "progress=false",
              f"cache_dir={CACHE}"]
    single = cli(*common, "pack_items=1", f"hydra.run.dir={tmp_path / 'one'}")   # one item at a time
    assert single.returncode == 0, single.stderr[-2000:]
    # one command: distributed.num_processes=2 starts the two workers itself (torch.distributed.run, what
    # `torchrun --nproc_per_node 2 -m smoothgen_exp ...` runs by hand)
    res = cli(*common, "distributed.num_processes=2", f"hydra.run.dir={tmp_path / 'two'}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]          # one run dir, not one per rank
    out = res.stdout + res.stderr                  # rank 0 logs the run; rank 1 repeated it, unprefixed
    assert "(rank 0 of 2)" in out and "(rank 1 of 2)" not in out
    parts = sorted(p.name for p in (tmp_path / "two" / "records").glob("part-*.parquet"))
    assert {p.split("-")[1] for p in parts} == {"000", "001"}                     # each rank its own parts
    two = rows(tmp_path / "two")
    assert not two.duplicated(["item_id", "variant"]).any()
    pd.testing.assert_frame_equal(rows(tmp_path / "one"), two)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["items"] == 6
    bad = cli(*common, "distributed.num_processes=0", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "distributed" in bad.stderr


@pytest.mark.slow     # about 20 s
def test_two_processes_with_an_attack_and_set_level_metrics_finish(tmp_path):
    """The attacked VAE outputs are gathered on rank 0 and their FID computed there alone: it must not
    wait for the other rank (a FID whose sync_on_compute was switched off after construction still
    synced, and the run failed with 'Connection closed by peer')."""
    res = cli("model=tiny_vae", "attack=photoguard", "metrics=reconstruction", "debug=smoke",
              "distributed.num_processes=2", f"cache_dir={CACHE}", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert {"metric_fid_attacked_baseline", "metric_fid_attacked_smoothed", "metric_fid_smoothed"} <= set(summary)


# a kill before the first part and one in the middle run by default; the other points in `make test-full`
KILL_AFTER_PARTS = [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
                    pytest.param(5, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, t2i):
    run_dir = tmp_path_factory.mktemp("kill") / "reference"
    per_item = [a if not a.startswith("pack_items=") else "pack_items=1" for a in KILL_ARGS]   # the per-item path
    res = cli(*per_item, f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stderr[-2000:]
    return rows(run_dir)


# killed and resumed runs pack three items at a time: a resumed run packs other groups than the killed one
KILL_ARGS = ["dataset.limit=8", "certifier.n=4000", "certifier.n0=50", "aggregator.n=50", "flush_every=1",
             "pack_items=3", "metrics=none", "progress=false", f"cache_dir={CACHE}"]


@pytest.mark.parametrize("parts_before_kill", KILL_AFTER_PARTS)
def test_kill_9_then_resume_gives_exactly_the_uninterrupted_rows(tmp_path, uninterrupted, parts_before_kill):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "smoothgen_exp", *KILL_ARGS, f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "HYDRA_FULL_ERROR")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((run_dir / "records").glob("part-*.parquet"))) >= parts_before_kill and \
                (parts_before_kill > 0 or (run_dir / "provenance.json").exists()):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.json").exists(), "the run finished before it could be killed"
    resumed = cli(*KILL_ARGS, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = rows(run_dir)
    assert not got.duplicated(["item_id", "variant"]).any()
    pd.testing.assert_frame_equal(got, uninterrupted)


def test_a_run_directory_is_written_by_one_process_at_a_time(tmp_path):
    """Workers that outlived a kill -9 of `distributed.num_processes=2` kept writing beside the rerun: 140
    rows for 60 items, and a summary over them (found by a new user). A second writer is now refused."""
    from smoothgen_exp.callbacks import ValidateOnStart
    from smoothgen_exp.config import compose_overrides, run_lock
    from smoothgen_exp.errors import SmoothgenError

    from .conftest import TINY, run_in_process

    busy = rf"another process \(pid {os.getpid()}\) is writing this run"
    with run_lock(tmp_path):
        with pytest.raises(SmoothgenError, match=busy):
            with run_lock(tmp_path):
                pass
        with pytest.raises(SmoothgenError, match=busy):                    # the runner takes it
            run_in_process(*TINY, "dataset.limit=1", "certifier.n=100", run_dir=tmp_path)
        (tmp_path / ".hydra").mkdir()
        cfg = compose_overrides([*TINY, f"hydra.run.dir={tmp_path}"], hydra_config=True)
        with pytest.raises(SystemExit):       # and the start callback asks, before Hydra rewrites .hydra/
            ValidateOnStart().on_run_start(config=cfg)
    with run_lock(tmp_path):                     # released at the end of the run
        pass


def test_workers_end_with_the_launcher_that_started_them():
    """`distributed.num_processes` marks its workers (distributed.LAUNCHER); a kill -9 of the launcher ends
    them too, instead of leaving them re-parented and writing (found by a new user)."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "from smoothgen_exp.distributed import LAUNCHER\n"
        "env = dict(os.environ, **{LAUNCHER: str(os.getpid())})\n"
        "code = 'from smoothgen_exp.distributed import die_with_launcher; die_with_launcher(); print(1, flush=True); "
        "import time; time.sleep(120)'\n"
        "child = subprocess.Popen([sys.executable, '-c', code], env=env, stdout=sys.stdout)\n"
        "print(child.pid, flush=True); time.sleep(120)\n")], stdout=subprocess.PIPE, text=True, cwd=REPO)
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "1"           # the child has set its death signal
    parent.kill()
    parent.wait()

    def alive(pid):
        try:
            return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child)
