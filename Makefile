# Two commands on a fresh machine: `make report` (the main job) and `make test` (the quick tests, budget 5 min on
# a quiet 2-core CPU). `make test-all` (what CI runs, budget 10 min) adds the slow tests and the notebooks.
# `make docs` builds the manual (docs/, mkdocs.yml) into site/.
PY      := .venv/bin/python
CLI     := .venv/bin/pvm-probe
STAMP   := .venv/.installed
OUT     ?= out/report
ADAPTERS := pvm_probe/assets/adapters
STAGE1  := --steps 3000 --batch-size 8 --lr 3e-3 --warmup 20 --seed 0 --log-every 10 --fillers said \
           --loss-on answer --backbone-visual-dropout 0.5 --alpha-init 1
PYTEST_ARGS ?=
PYTEST  := OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=25

.PHONY: install report report-check test test-slow test-all lint docs bench figures notebooks adapters baseline clean

install: $(STAMP)

# torch is pinned to the CPU build first so that nothing pulls a multi-GB CUDA wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,docs]"
	touch $(STAMP)

report: $(STAMP)
	OMP_NUM_THREADS=1 $(CLI) report --out $(OUT)

# Opens the report in headless Chromium (Debian's `chromium`): JavaScript errors, figures, the explorer,
# the headline against metrics.json; writes $(OUT)/screenshot.png. CI runs the same check as a test.
report-check: report
	$(PY) -m pvm_probe.report.browser $(OUT)/report.html

# The quick tier: every test not marked `slow` (pyproject.toml says what slow is).
test: $(STAMP)
	$(PYTEST) -m "not slow" tests $(PYTEST_ARGS)

# The slow tier: the end-to-end, browser and multi-process tests, and the notebooks run top to bottom.
test-slow: $(STAMP)
	$(PYTEST) -m slow tests $(PYTEST_ARGS)
	$(PYTEST) --nbmake notebooks $(PYTEST_ARGS)

# Everything (what .ci/run runs): the quick tier, then the slow one.
test-all: test test-slow

lint: $(STAMP)
	.venv/bin/ruff check pvm_probe tests analyses docs/hooks.py

# The docs site, offline, warnings as errors (a broken link or a missing API name fails); the CLI reference is
# generated from the parsers and the notebooks are rendered from their committed outputs (docs/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) analyses/bench_overhead.py
	$(PY) analyses/bench_probes.py
	$(PY) analyses/bench_train.py
	$(PY) analyses/bench_fit.py
	$(PY) analyses/bench_arms.py

figures: $(STAMP)
	for f in analyses/fig_*.py; do $(PY) $$f || exit 1; done

# Re-executes the notebooks in place, so the committed copies keep their outputs: each figure's plotly JSON with
# a static PNG beside it. Widget state is not kept (a plotly FigureWidget's state carries plotly.js, 5 MB each).
notebooks: $(STAMP)
	OMP_NUM_THREADS=1 .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb

# The shipped adapters, as they were trained (CPU, 1 thread each); see each train_log.json.
adapters: $(STAMP)
	$(CLI) train-pvm --overwrite --out $(ADAPTERS)/pvm-stage1 $(STAGE1)
	$(CLI) train-pvm --overwrite --out $(ADAPTERS)/mlp-control --block mlp $(STAGE1)
	$(CLI) train-pvm --overwrite --out $(ADAPTERS)/processed-control --visual-source hidden:0 $(STAGE1)
	$(CLI) train-pvm --overwrite --out $(ADAPTERS)/pvm-stage2 --stage 2 --init $(ADAPTERS)/pvm-stage1 \
		--steps 20 --batch-size 16 --num-generations 8 --lr 1e-5 --seed 0 --log-every 5 --fillers said

clean:
	rm -rf out site .pytest_cache
