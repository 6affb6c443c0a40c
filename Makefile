# Two commands do all the set-up on a fresh machine (Python >= 3.11 with venv and a C compiler):
#   make demo   -> create .venv, install csp, convert the bundled sample slide and read it back
#   make test   -> create .venv, install csp with its test extras, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.csp-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"  # the local CPU build; an unpinned torch pulls CUDA
	$(PY) -m pip install --quiet -e ".[test,torch,bench]"
	touch $@

demo: $(VENV)/.csp-installed
	$(PY) -m csp.demo

test: $(VENV)/.csp-installed
	$(PY) -m pytest -q

bench: $(VENV)/.csp-installed  # all side-by-side benchmarks (tens of minutes), then docs/benchmarks.md
	$(PY) benchmarks/bench_read.py
	$(PY) benchmarks/bench_convert.py
	$(PY) benchmarks/bench_archive.py
	$(PY) benchmarks/bench_codec.py --repeat 5 --runs 3 --json benchmarks/results/codec.json
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
