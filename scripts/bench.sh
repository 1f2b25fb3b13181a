#!/usr/bin/env bash
# Benchmarks that print ratios against raw baselines (ARCHITECTURE.md section 9), then the
# Go micro-benchmarks. `make bench` runs this after `make build`.
#
# Environment:
#   BENCH_EXCHANGE_FLAGS  extra flags for bin/bench-exchange (e.g. "-runs=5 -records=50000000",
#                         "-profile-dir=/tmp/prof" for CPU profiles of both processes)
#   BENCH_CHECKPOINT_FLAGS  extra flags for bin/bench-checkpoint (e.g. "-keys=5000000",
#                           "-records=64000000", "-parts=state" for the state part only)
#   BENCH_RESTORE_FLAGS   extra flags for bin/bench-restore (e.g. "-size=4000000000 -runs=5")
#   BENCH_RESCALE_FLAGS   extra flags for bin/bench-rescale (e.g. "-keys=4000000")
#   BENCH_INCREMENTAL_FLAGS extra flags for bin/bench-incremental (e.g. "-keys=1000000",
#                           "-modes=DELTAS", "-base-share=0.2", "-sorted-runs=48"); it needs cgo (RocksDB)
#   BENCHTIME             -benchtime of the Go benchmarks (default 1s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO=${GO:-go}

echo "== record exchange between two processes vs raw grpc-go (bench/exchange)"
"$GO" build -o bin/bench-exchange ./bench/exchange
# shellcheck disable=SC2086 # word splitting of the extra flags is intended
./bin/bench-exchange ${BENCH_EXCHANGE_FLAGS:-}

echo
echo "== checkpoints: 1M-key heap checkpoint vs raw blob-store I/O; keyed-count exactly-once vs none (bench/checkpoint)"
"$GO" build -o bin/bench-checkpoint ./bench/checkpoint
# shellcheck disable=SC2086 # word splitting of the extra flags is intended
./bin/bench-checkpoint ${BENCH_CHECKPOINT_FLAGS:-}

echo
echo "== RocksDB incremental checkpoints while compaction runs: bytes uploaded vs bytes changed (bench/incremental)"
"$GO" build -o bin/bench-incremental ./bench/incremental
# shellcheck disable=SC2086 # word splitting of the extra flags is intended
./bin/bench-incremental ${BENCH_INCREMENTAL_FLAGS:-}

echo
echo "== RocksDB local recovery: 1 GB restored from the local copy vs from the checkpoint storage (bench/restore)"
"$GO" build -o bin/bench-restore ./bench/restore
# shellcheck disable=SC2086 # word splitting of the extra flags is intended
./bin/bench-restore ${BENCH_RESTORE_FLAGS:-}

echo
echo "== RocksDB rescaling by key groups: restore at another parallelism vs the same (bench/rescale)"
"$GO" build -o bin/bench-rescale ./bench/rescale
# shellcheck disable=SC2086 # word splitting of the extra flags is intended
./bin/bench-rescale ${BENCH_RESCALE_FLAGS:-}

echo
echo "== Go benchmarks"
"$GO" test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-1s}" ./bench/... ./pkg/...
