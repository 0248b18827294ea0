# hfcompress — two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is a CPU build on these machines' disk; any other torch spec would pull a
# multi-GB CUDA build. Override with e.g. TORCH_SPEC="torch --index-url <cpu wheel index>".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install assets test test-fast demo lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The speech dataset needs espeak-ng (Debian: apt-get install -y espeak-ng; .ci/run installs it).
assets: install
	$(VENV)/bin/hfcompress assets

test: install assets
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/pytest -q -m "not real" $(PYTEST_ARGS)

demo: install assets
	$(PY) scripts/demo.py

lint: install
	$(VENV)/bin/ruff check hfcompress tests benchmarks scripts

bench: install assets
	for f in benchmarks/*_*.py; do [ $$f = benchmarks/update_readme.py ] || $(PY) $$f || exit 1; done
	$(PY) benchmarks/update_readme.py

clean:
	rm -rf demo-output .pytest_cache
