# Two commands on a fresh clone:  `make run` (the main job, offline data)  and  `make test`.
# Every target creates .venv when it is missing or older than requirements.lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test test-slow bench lock clean

$(STAMP): requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $(STAMP)

run: $(STAMP)                     ## the main job: the DiT-μP transfer study (ARGS=budget=smoke: minutes)
	$(PY) -m src.run experiment=dit_mup_sweep $(ARGS)

test: $(STAMP)                    ## everything not marked slow (< 15 min on 2 cores)
	$(PY) -m pytest -m "not slow and not gpu" $(ARGS)

test-slow: $(STAMP)               ## the slow checks
	$(PY) -m pytest -m "slow or gpu" $(ARGS)

bench: $(STAMP)                   ## speed baselines (ratios measured side by side)
	$(PY) experiments/benchmarks/gpt2_step.py
	$(PY) experiments/benchmarks/spectral_monitor.py
	$(PY) experiments/benchmarks/sweep_launchers.py --repeats 1
	$(PY) experiments/benchmarks/vrpo_step.py

lock:                             ## re-resolve pyproject.toml's ranges into requirements.lock
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check ".[dev]"
	{ echo "# Exact versions installed by \`make\` (pip install -r requirements.lock). Regenerate with \`make lock\`."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^scaling-lab=='; } > requirements.lock
	rm -rf .lock-venv build

clean:                            ## remove the environment, caches and outputs
	rm -rf $(VENV) .cache outputs multirun .pytest_cache
