# DexOrder — the two commands: `make up` (install + start the platform) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python

.PHONY: up install test unit lint bench eval clean flink-venv flink-job

up: install
	$(VENV)/bin/dexorder up

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# two workers, a test file each: most tests wait on the parts' processes, not the CPU;
# then the `solo` tests alone (the Flink mini-cluster's job takes both cores and starved
# a parallel test's parts)
test: install
	$(PY) -m pytest -n 2 --dist loadfile -m "not solo"
	$(PY) -m pytest -m solo

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

# 30 plain requests scored by the tools they lead to: Claude with ANTHROPIC_API_KEY set,
# else the offline model (bench/eval.py)
eval: install
	$(PY) -m bench.eval

# The PyFlink job (streaming/flink/) in its own virtualenv: apache-flink pins pyarrow 16,
# which clashes with pyiceberg's. Needs Java 17 (Debian: openjdk-17-jre-headless).
FLINK_VENV ?= .venv-flink
FLINK_ARGS ?= --config streaming/flink/local.yaml

flink-venv: $(FLINK_VENV)/.installed

$(FLINK_VENV)/.installed: streaming/flink/requirements.txt
	$(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install --quiet -r streaming/flink/requirements.txt
	touch $@

# Run the job on Flink's local mini-cluster, against the files named in the config
# (make flink-job FLINK_ARGS="--config my.yaml"); see streaming/flink/job.py.
flink-job: flink-venv
	$(FLINK_VENV)/bin/python -m streaming.flink.job $(FLINK_ARGS)

clean:
	rm -rf $(VENV) $(FLINK_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
