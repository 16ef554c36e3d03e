# dynaraft: the two commands a fresh machine needs are `make run` and `make test`.
CARGO ?= cargo
VENV  := .venv
PY    := $(VENV)/bin/python
ARGS  ?=
# Where cargo puts binaries (honours CARGO_TARGET_DIR, like cargo itself).
TARGET := $(or $(CARGO_TARGET_DIR),target)

.PHONY: build run cluster global test test-rust test-clients test-cluster test-deploy k8s-manifests test-console test-chaos chaos bench bench-growth bench-wrk fuzz fmt lint clean

build:
	$(CARGO) build --release -p dynaraft

## Start the embedded server on 127.0.0.1:8000 with data under ./data.
## Extra flags: make run ARGS="--port 9000 --in-memory"
run: build
	$(TARGET)/release/dynaraft embedded $(ARGS)

## A local three-zone cluster as separate processes: storage nodes on
## 127.0.0.1:7001-7003 (az-a, az-b, az-c), the router on :8000, data under
## ./data-cluster. Ctrl-C stops every process cleanly.
## Inspect it with: ./target/release/dynaraft admin --control "$$(cat data-cluster/control)"
## Storage-node flags: make cluster NODE_FLAGS="--split-size-bytes 65536"
cluster: build
	@trap 'deploy/local/cluster.sh stop data-cluster' INT TERM EXIT; \
	deploy/local/cluster.sh start $(TARGET)/release/dynaraft data-cluster 8000 7001 $(ARGS) && \
	echo "cluster ready: router on http://127.0.0.1:8000 (Ctrl-C stops it)" && \
	while sleep 3600; do :; done

## Two local three-zone clusters as the regions of global tables:
## us-east-1 (router :8000, nodes :7001-7003) and eu-west-1 (router :8001,
## nodes :7101-7103), data under ./data-global. Ctrl-C stops them.
GLOBAL_DIR := data-global
global: build
	@trap 'deploy/local/cluster.sh stop $(GLOBAL_DIR)/us-east-1; deploy/local/cluster.sh stop $(GLOBAL_DIR)/eu-west-1' INT TERM EXIT; \
	NODE_FLAGS="--region us-east-1 --peer-region eu-west-1=http://127.0.0.1:8001" \
	  deploy/local/cluster.sh start $(TARGET)/release/dynaraft $(GLOBAL_DIR)/us-east-1 8000 7001 \
	  --region us-east-1 --peer-region eu-west-1=http://127.0.0.1:8001 && \
	NODE_FLAGS="--region eu-west-1 --peer-region us-east-1=http://127.0.0.1:8000" \
	  deploy/local/cluster.sh start $(TARGET)/release/dynaraft $(GLOBAL_DIR)/eu-west-1 8001 7101 \
	  --region eu-west-1 --peer-region us-east-1=http://127.0.0.1:8000 && \
	echo "regions ready: us-east-1 on http://127.0.0.1:8000, eu-west-1 on http://127.0.0.1:8001 (Ctrl-C stops them)" && \
	while sleep 3600; do :; done

## Everything CI runs: unit, golden and SDK integration tests (including an
## in-process three-zone cluster and kill -9 of real processes), then the
## AWS CLI and boto3 sessions against a real embedded process (and that
## process on a disk that fills up, on a small tmpfs: needs root, and with
## fsyncs that fail, through an LD_PRELOAD shim) and against a
## real three-process cluster, then offline checks of the Kubernetes manifests,
## then a short fault-harness run (see `chaos`).
test: test-rust test-clients test-cluster test-deploy test-console test-chaos

# In-process servers get the binary's worker stack (WORKER_STACK_BYTES in
# crates/server/src/main.rs, 8 MiB) rather than the 2 MiB of a
# #[tokio::test] runtime: a debug build's request path is deep.
TEST_STACK_BYTES := 8388608
test-rust:
	RUST_MIN_STACK=$(TEST_STACK_BYTES) $(CARGO) test --workspace

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/requirements.txt
	touch $@

test-clients: $(VENV)/.installed
	$(CARGO) build -p dynaraft
	tests/scripts/cli_session.sh $(TARGET)/debug/dynaraft $(VENV)/bin/aws
	$(PY) tests/scripts/boto3_session.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/auth_session.py $(TARGET)/debug/dynaraft $(VENV)/bin/aws
	$(PY) tests/scripts/stream_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/split_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/store_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/backup_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/export_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/s3_session.py $(TARGET)/debug/dynaraft $(VENV)/bin/moto_server
	$(PY) tests/scripts/encryption_crash.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/global_session.py $(TARGET)/debug/dynaraft $(VENV)/bin/aws
	$(PY) tests/scripts/disk_full.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/fsync_failure.py $(TARGET)/debug/dynaraft

## A table growing from 1 to 16 partitions under load on a local cluster of
## separate processes (no client error, every item found after); a rolling
## restart under load; a control-plane member that lost its disk removed
## and added back (the runbook in deploy/README.md); then the
## same client sessions, unchanged, against such a cluster (tables split
## into two partitions so scans cross partitions),
## whose router authenticates every request (the sessions' key is a user of
## tests/scripts/session-auth.json).
CLUSTER_TEST_DIR := $(TARGET)/test-cluster
test-cluster: $(VENV)/.installed
	$(CARGO) build -p dynaraft
	$(PY) tests/scripts/cluster_growth.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/rolling_restart.py $(TARGET)/debug/dynaraft
	$(PY) tests/scripts/control_replace.py $(TARGET)/debug/dynaraft
	rm -rf $(CLUSTER_TEST_DIR)
	@trap 'deploy/local/cluster.sh stop $(CLUSTER_TEST_DIR)' EXIT; \
	deploy/local/cluster.sh start $(TARGET)/debug/dynaraft $(CLUSTER_TEST_DIR) 18000 17001 \
	  --partitions-per-table 2 --transition-delay-ms 200 --auth-file tests/scripts/session-auth.json && \
	DYNARAFT_URL=http://127.0.0.1:18000 DYNARAFT_OBJECTS=$(CLUSTER_TEST_DIR)/objects \
	  tests/scripts/cli_session.sh $(TARGET)/debug/dynaraft $(VENV)/bin/aws && \
	DYNARAFT_URL=http://127.0.0.1:18000 $(PY) tests/scripts/boto3_session.py $(TARGET)/debug/dynaraft

## The Helm chart, offline (deploy/helm/check.py): `helm lint --strict`,
## renderings with the defaults and with variants validated against the
## Kubernetes 1.30 schemas in strict mode, the storage pods' command lines
## against the control-plane list, Pod Security "restricted", values that
## cannot work refused, and deploy/k8s/dynaraft.yaml equal to the default
## rendering; the Grafana dashboard and its provisioning files, offline,
## with every metric it queries checked against a live embedded server's
## /metrics; the image's default command run as the image's user (no
## container runtime).
K8S_VERSION := 1.30.0
test-deploy: $(VENV)/.installed
	$(CARGO) build -p dynaraft
	$(PY) deploy/helm/check.py $(VENV)/bin/helm $(VENV)/bin/kubernetes-validate $(K8S_VERSION) \
	  $(TARGET)/debug/dynaraft
	$(PY) deploy/grafana/check.py $(TARGET)/debug/dynaraft
	$(PY) deploy/image_check.py $(TARGET)/debug/dynaraft

## The web console in a real browser: headless Chromium (Debian's
## package, installed when missing and apt-get is usable as root), driven
## over the DevTools protocol against an embedded server and a three-zone
## cluster with authentication (tests/scripts/console_session.py).
## Screenshots land in $(TARGET)/console.
CHROMIUM ?= chromium
test-console: $(VENV)/.installed
	$(CARGO) build -p dynaraft
	@command -v $(CHROMIUM) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "test-console needs Chromium: apt-get install chromium"; exit 1; }
	$(PY) tests/scripts/console_session.py $(TARGET)/debug/dynaraft "$$(command -v $(CHROMIUM))" $(TARGET)/console

## The plain manifests (deploy/k8s/dynaraft.yaml): the chart rendered with
## its defaults, for `kubectl apply` without Helm.
k8s-manifests: $(VENV)/.installed
	$(VENV)/bin/helm template dynaraft deploy/helm/dynaraft --namespace dynaraft \
	  --set namespace.create=true > deploy/k8s/dynaraft.yaml

## The side-by-side benchmark: the machine's floors (fsync, an empty HTTP
## round trip), then the embedded server, dynalite (npm, into
## $(BENCH_OUT)/dynalite on first use), the local three-zone cluster (also
## splitting a table under load and moving replicas to an added node) and a
## three-member etcd (Debian's etcd-server, installed when missing and
## apt-get is usable; skipped otherwise), all under the same YCSB workloads
## with `dynaraft bench`. Writes docs/performance.md.
## Shorter: make bench BENCH_ARGS="--seconds 3 --records 10000"
BENCH_OUT  := $(TARGET)/bench
BENCH_ARGS ?=
bench:
	$(CARGO) build --release -p dynaraft -p dynaraft-bench
	@command -v etcd >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null; } || \
	  echo "etcd-server not installed: the etcd comparison is skipped"; }
	$(TARGET)/release/dynaraft-bench-suite run --binary $(TARGET)/release/dynaraft \
	  --out $(BENCH_OUT) --report docs/performance.md $(BENCH_ARGS)

## The growth benchmark alone at full size: the embedded server's table
## grows through GROWTH_STEPS GiB (1, 10 and 50, times GROWTH_SCALE; 1.86
## and 1.22 bytes of disk per live byte at 1 and 10 GiB, measured
## 2026-12-06, more on small tables, so scale down or leave the last size
## out on small disks). Report in $(BENCH_OUT)/growth.md. (`make
## bench` runs it at 1/100 of these sizes.)
GROWTH_SCALE ?= 1
GROWTH_STEPS ?= 1,10,50
bench-growth:
	$(CARGO) build --release -p dynaraft -p dynaraft-bench
	$(TARGET)/release/dynaraft-bench-suite run --binary $(TARGET)/release/dynaraft \
	  --out $(BENCH_OUT) --report $(BENCH_OUT)/growth.md --analysis /dev/null \
	  --systems= --growth-scale $(GROWTH_SCALE) --growth-steps-gib $(GROWTH_STEPS) $(BENCH_ARGS)

## The independent check of the report (issue 27): wrk, a load generator
## we did not write, and `dynaraft bench` send GetItem and PutItem at 32
## connections to dynalite and to the embedded server in one sitting
## (crates/bench/wrk/compare.sh; wrk from apt-get when missing).
bench-wrk:
	$(CARGO) build --release -p dynaraft
	BIN=$(TARGET)/release/dynaraft OUT=$(BENCH_OUT)/wrk DYNALITE_DIR=$(BENCH_OUT)/dynalite \
	  crates/bench/wrk/compare.sh

## The fault harness, short: five scenarios (kill -9, partition, SIGSTOP,
## failing fsyncs, kill -9 with a torn WAL write) of 30 s each against a
## real three-zone cluster with a fresh seed (printed;
## replay with --seed), a partition of the test table split every 3 s
## throughout, then 15 s of a deliberately broken router that the
## checker must catch. Fails on any linearizability violation or lost write,
## or a node not caught up (`/ready`) 30 s after the last heal.
CHAOS := $(TARGET)/debug/dynaraft-chaos
## The deliberately broken router (--unsafe-ack-before-commit) exists only
## in builds with the `failpoints` feature.
FAIL_FSYNC := $(TARGET)/fail_fsync.so
$(FAIL_FSYNC): tests/faults/fail_fsync.c
	@mkdir -p $(TARGET)
	cc -shared -fPIC -O2 -o $@ $< -ldl
test-chaos: $(FAIL_FSYNC)
	$(CARGO) build -p dynaraft --features dynaraft/failpoints -p dynaraft-chaos
	$(CHAOS) run --binary $(TARGET)/debug/dynaraft --out $(TARGET)/chaos-test \
	  --scenarios kill,partition,pause,fsync-failure,torn-write,replace --duration-s 30 --split-every-s 3 \
	  --fail-fsync-lib $(FAIL_FSYNC)
	$(CHAOS) global --binary $(TARGET)/debug/dynaraft --out $(TARGET)/chaos-global --duration-s 30
	$(CHAOS) run --binary $(TARGET)/debug/dynaraft --out $(TARGET)/chaos-test-broken \
	  --scenarios kill --duration-s 15 --expect-violations

## The fault harness, long (not in CI): every fault kind alone and then all
## of them mixed, CHAOS_MINUTES each, on a release build; the summary table
## goes to $(TARGET)/chaos/summary.md. Then the broken-build check. Clock
## skew preloads Debian's libfaketime into the nodes (installed here if
## missing; apt-get needs root).
## Extra flags: make chaos CHAOS_ARGS="--seed 42 --scenarios pause"
CHAOS_MINUTES ?= 10
CHAOS_ARGS ?=
chaos: $(FAIL_FSYNC)
	@dpkg -s libfaketime >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libfaketime)
	$(CARGO) build --release -p dynaraft --features dynaraft/failpoints -p dynaraft-chaos
	$(TARGET)/release/dynaraft-chaos run --binary $(TARGET)/release/dynaraft --out $(TARGET)/chaos \
	  --duration-s $$(( $(CHAOS_MINUTES) * 60 )) --base-port 19300 --fail-fsync-lib $(FAIL_FSYNC) $(CHAOS_ARGS)
	$(TARGET)/release/dynaraft-chaos run --binary $(TARGET)/release/dynaraft --out $(TARGET)/chaos-broken \
	  --scenarios mixed --duration-s 60 --base-port 19300 --fail-fsync-lib $(FAIL_FSYNC) --expect-violations
	$(TARGET)/release/dynaraft-chaos global --binary $(TARGET)/release/dynaraft --out $(TARGET)/chaos-global \
	  --duration-s $$(( $(CHAOS_MINUTES) * 60 ))

## Coverage-guided fuzzing of the expression parser and evaluator (not in
## CI). cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable
## toolchain provide them. New inputs go to an ignored work folder; the
## reviewed seed corpus is crates/expr/fuzz/corpus/parse_eval.
FUZZ_SECONDS ?= 300
CARGO_FUZZ := tests/.tools/bin/cargo-fuzz

$(CARGO_FUZZ):
	$(CARGO) install --root tests/.tools cargo-fuzz --locked

fuzz: $(CARGO_FUZZ)
	mkdir -p crates/expr/fuzz/corpus-work
	cd crates/expr && RUSTC_BOOTSTRAP=1 ../../$(CARGO_FUZZ) run parse_eval \
		fuzz/corpus-work fuzz/corpus/parse_eval -- \
		-max_total_time=$(FUZZ_SECONDS) -max_len=4200 -timeout=5 -rss_limit_mb=2048

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
	rm -rf $(VENV) data
