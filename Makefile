# Set-up and everyday commands. `make install` once, then `make train` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: install train test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# the torch builds this project is tested with (installed from the local wheel cache where there is one),
	# then the package with every dependency at the version in constraints.txt (the lock)
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

train: install
	$(PY) -m anomaly.train $(ARGS)

test: install
	# the tests spread over every core (pytest-xdist, worksteal: tests/conftest.py gives each worker long tests
	# first and quick ones last): about 5 minutes on 2 cores (a clean clone: 4.1 min on 2026-12-08, 5.6-5.9 min on
	# the slower 2026-12-07 host)
	$(PY) -m pytest -q -n auto --dist worksteal tests

# benchmarks vs the published code's loops (Markdown table; ARGS="--device cuda --size full", "--only 1,4")
bench: install
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
