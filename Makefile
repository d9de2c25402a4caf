# driftline — the two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BROKER := deploy/kafka/broker.sh

.PHONY: test unit demo quality bench lint broker-start broker-stop clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## All tests, unit and integration, against a real broker (started here if none runs), a real
## Prometheus, kcat and headless Chromium (installed from Debian's packages if missing).
test: $(STAMP)
	deploy/ensure-tools.sh
	deploy/with-broker.sh $(PY) -m pytest tests driftline

## Unit tests only: the pure core and its docstring examples, no broker.
unit: $(STAMP)
	$(PY) -m pytest tests/unit driftline

## Three models on a real broker; one degrades; the alerts are printed as they arrive.
demo: $(STAMP)
	deploy/with-broker.sh deploy/demo/demo.sh

## Detection delay and false alarms of the defaults on seeded synthetic streams.
quality: $(STAMP)
	$(PY) bench/quality.py --output bench/QUALITY.md

## Throughput through a real broker (as a ratio to raw consume-and-decode), in memory against a
## naive implementation, alert latency and memory per model; floors checked (bench/throughput.py).
bench: $(STAMP)
	deploy/with-broker.sh $(PY) bench/throughput.py --output bench/THROUGHPUT.md --json bench/results.json

lint: $(STAMP)
	$(VENV)/bin/ruff check detectors service tests bench deploy/examples
	$(VENV)/bin/mypy

broker-start:
	$(BROKER) start

broker-stop:
	$(BROKER) stop

clean:
	-$(BROKER) stop
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
