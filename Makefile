# dynaraft: the two commands a fresh machine needs are `make run` and `make test`.
CARGO ?= cargo
VENV  := .venv
PY    := $(VENV)/bin/python
ARGS  ?=

.PHONY: build run test test-rust test-clients fmt lint clean

build:
	$(CARGO) build --release -p dynaraft

## Start the embedded server on 127.0.0.1:8000 with data under ./data.
## Extra flags: make run ARGS="--port 9000 --in-memory"
run: build
	./target/release/dynaraft embedded $(ARGS)

## Everything CI runs: unit, golden and SDK integration tests, then the AWS
## CLI and boto3 sessions against a real dynaraft process.
test: test-rust test-clients

test-rust:
	$(CARGO) test --workspace

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/requirements.txt
	touch $@

test-clients: $(VENV)/.installed
	$(CARGO) build -p dynaraft
	tests/scripts/cli_session.sh target/debug/dynaraft $(VENV)/bin/aws
	$(PY) tests/scripts/boto3_session.py target/debug/dynaraft

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
	rm -rf $(VENV) data
