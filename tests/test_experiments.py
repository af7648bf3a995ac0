"""Named experiments compose, run as sweeps, and their scripts produce the figures and tables."""

import subprocess
import sys

from .conftest import CACHE, REPO, cli


def test_scaling_laws_experiment_smoke(tmp_path, t2i):
    sweep, out = tmp_path / "sweep", tmp_path / "tables"
    res = cli("experiment=scaling_laws", "certifier.n=30,100", "dataset.limit=3", "aggregator.n=20",
              "progress=false", f"cache_dir={CACHE}", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p.parent.parent.name for p in sweep.rglob("summary.json"))      # <overrides>/<run_id>
    assert runs == ["aggregator.n=20,certifier.n=100,dataset.limit=3", "aggregator.n=20,certifier.n=30,dataset.limit=3"]
    res = subprocess.run([sys.executable, "scripts/scaling_laws.py", str(sweep), "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("scaling_ratio.png", "scaling_certified_accuracy.png", "scaling_accuracy_drop.png",
                 "scaling_time.png", "scaling_laws.md", "scaling_laws.tex", "scaling_laws.csv"):
        assert (out / name).stat().st_size > 100, name
    assert "ratio_predicted" in (out / "scaling_laws.md").read_text()


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
