#!/bin/sh
# One command from a fresh checkout: build release, run workflowd-bench, write bench.json.
#
#   scripts/bench.sh                 # full run (a few minutes)
#   scripts/bench.sh --quick         # CI smoke (under a minute once built)
#   WORKFLOWD_TEST_DSN='root@unix(/tmp/mdb/mysqld.sock)/' scripts/bench.sh
#
# Extra arguments go to workflowd-bench (see `workflowd-bench --help`). Without a DSN
# (--dsn or WORKFLOWD_TEST_DSN) the bench starts a private MariaDB in /tmp/wfbench-<uid>
# and stops it afterwards. Output: the table on stdout, progress on stderr, bench.json
# (or $BENCH_JSON) in the current folder.
set -eu
cd "$(dirname "$0")/.."
SCRATCH=${BENCH_SCRATCH:-.build-bench}
OUT=${BENCH_JSON:-bench.json}
echo "[bench.sh] building release into $SCRATCH" >&2
swift build -c release --scratch-path "$SCRATCH" --product workflowd >&2
swift build -c release --scratch-path "$SCRATCH" --product workflowd-bench >&2
BIN=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)
exec "$BIN/workflowd-bench" --workflowd "$BIN/workflowd" --json "$OUT" "$@"
