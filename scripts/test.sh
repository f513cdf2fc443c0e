#!/usr/bin/env bash
# The test command: builds workflowd and runs every test against a real MariaDB.
#
#   scripts/test.sh [swift test arguments...]      e.g. scripts/test.sh --filter DockerComposeTests
#
# - installs the system packages if any is missing (scripts/install-deps.sh);
# - uses the server in $WORKFLOWD_TEST_DSN if set, otherwise starts a private MariaDB
#   (scripts/mariadb.sh, socket only, in $WORKFLOWD_TEST_DB_DIR or .tmp/mariadb) and stops it
#   again at the end — only if this script started it;
# - runs `swift build --build-tests`, then `swift test`, then the client tests;
# - exits non-zero if anything failed.
# WORKFLOWD_SCRATCH_PATH selects another SwiftPM build folder (default .build).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

started_at=$SECONDS
step() { printf '\n==> [test.sh +%ss] %s\n' "$((SECONDS - started_at))" "$*" >&2; }

# 1. System packages and Swift.
step "checking system packages"
need_install=0
for tool in mariadbd mariadb-install-db mariadb-admin mariadb socat pkg-config openssl; do
    PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || need_install=1
done
pkg-config --exists libuv libmariadb 2>/dev/null || need_install=1
if [ "$need_install" -eq 1 ]; then
    scripts/install-deps.sh
fi
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
command -v swift >/dev/null 2>&1 || { scripts/install-deps.sh; exit 1; }

# 2. The database.
started_db=0
stop_db() {
    if [ "$started_db" -eq 1 ]; then
        step "stopping the private MariaDB"
        scripts/mariadb.sh stop || true
    fi
}
trap stop_db EXIT
if [ -n "${WORKFLOWD_TEST_DSN:-}" ]; then
    step "using the MariaDB in WORKFLOWD_TEST_DSN"
else
    step "starting a private MariaDB"
    started_db=1
    scripts/mariadb.sh start >/dev/null
    eval "$(scripts/mariadb.sh env)"
fi
export WORKFLOWD_TEST_DSN
# The DSN carries no password here, but never print it whole: it may, when set by a caller.
printf '    WORKFLOWD_TEST_DSN is set (%s...)\n' "${WORKFLOWD_TEST_DSN%%@*}" >&2

swift_flags=()
if [ -n "${WORKFLOWD_SCRATCH_PATH:-}" ]; then swift_flags+=(--scratch-path "$WORKFLOWD_SCRATCH_PATH"); fi

# 3. Swift.
step "swift build --build-tests"
swift build "${swift_flags[@]}" --build-tests

status=0
swift_failed=0
mkdir -p .tmp
test_log=.tmp/swift-test.log
: >"$test_log"
run_swift_test() {
    step "swift test $*"
    local s=0
    swift test "${swift_flags[@]}" "$@" 2>&1 | tee -a "$test_log" || s=$?
    if [ "$s" -ne 0 ]; then
        step "swift test $* FAILED (exit status $s)"
        status=$s
        swift_failed=1
    fi
}
if [ "$#" -gt 0 ]; then
    run_swift_test "$@"
else
    # Two processes: the integration tests wait on sockets and child processes, and a
    # cooperative pool as wide as the cores (2 in CI) is no place to share with the
    # engine's and the stores' tests, which measure their waits.
    run_swift_test --skip IntegrationTests
    run_swift_test --filter IntegrationTests
fi

# 4. Client tests (python / shell), against the workflowd just built and the same database.
bin_dir="$(swift build "${swift_flags[@]}" --show-bin-path)"
step "python client tests"
WORKFLOWD_BIN="$bin_dir/workflowd" python3 -m unittest discover -s clients/python -v || status=1
step "shell client tests"
WORKFLOWD_BIN="$bin_dir/workflowd" clients/sh/test.sh || status=1

if [ "$status" -eq 0 ]; then
    step "all tests passed"
else
    if [ "$swift_failed" -eq 1 ]; then
        # Repeat what failed at the end, where a reader of a long CI log looks first.
        step "swift test failures (whole log: $test_log):"
        grep -E -A4 'recorded an issue|✘ Test [^r]|error: |Fatal error|Test Case .* failed' "$test_log" | head -n 80 >&2 || true
    fi
    step "tests FAILED"
fi
exit "$status"
