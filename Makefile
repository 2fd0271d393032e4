# Two commands on a fresh machine: `make report` (the main job) and `make test`.
PY      := .venv/bin/python
STAMP   := .venv/.installed
OUT     ?= out/report
PYTEST_ARGS ?=

.PHONY: install report test lint bench figures clean

install: $(STAMP)

# torch is pinned to the CPU build first so that nothing pulls a multi-GB CUDA wheel.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

report: $(STAMP)
	.venv/bin/pvm-probe report --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	.venv/bin/ruff check pvm_probe tests analyses

bench: $(STAMP)
	$(PY) analyses/bench_overhead.py --json figures/bench_overhead.json

clean:
	rm -rf out .pytest_cache
