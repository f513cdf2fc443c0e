#!/usr/bin/env bash
# Tests of the shell clients against a real workflowd and MariaDB.
#
#   WORKFLOWD_TEST_DSN='root@unix(/path/mysqld.sock)/' clients/sh/test.sh
#
# WORKFLOWD_BIN: the workflowd binary (default .build/debug/workflowd in the repository).
# WORKFLOWD_TEST_DSN: a DSN ending in "/"; a fresh database is appended, created with
# `workflowd migrate --create-database`, and dropped at the end (with the mariadb client, when
# the DSN is a unix socket one).
#
# The server runs with a payment latency of 10 minutes: a valid order stops at OrderValidated
# (so pause/resume/cancel and await TIMEOUT are deterministic), while an invalid order (no
# customer name) is rejected at once (so await returns and UNREACHABLE is deterministic).
# Prints "N passed, M failed" last; exits 1 if anything failed.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${WORKFLOWD_BIN:-$repo/.build/debug/workflowd}"
[ -n "${WORKFLOWD_TEST_DSN:-}" ] || { echo "WORKFLOWD_TEST_DSN is required (e.g. 'root@unix(/tmp/mdb/mysqld.sock)/')" >&2; exit 2; }
[ -x "$bin" ] || { echo "no workflowd binary at $bin (set WORKFLOWD_BIN)" >&2; exit 2; }
command -v socat >/dev/null || { echo "socat is required" >&2; exit 2; }

dbname="wf_shtest_$$_$RANDOM"
dsn="${WORKFLOWD_TEST_DSN%/}/$dbname"
tmp="$(mktemp -d)"
export WORKFLOWD_SOCKET="$tmp/wf.sock"
server_pid=''

passed=0
failed=0
pass() { passed=$((passed + 1)); printf "ok   %s (%ss)\n" "$1" "$SECONDS"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; [ -n "${2:-}" ] && printf '     %s\n' "$2"; }

cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid"
    fi
    local sock
    sock=$(printf '%s' "$WORKFLOWD_TEST_DSN" | sed -n 's/.*@unix(\([^)]*\)).*/\1/p')
    if [ -n "$sock" ] && command -v mariadb >/dev/null; then
        mariadb --no-defaults -S "$sock" -uroot -e "DROP DATABASE IF EXISTS \`$dbname\`" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# run NAME EXPECTED_EXIT CMD... — runs CMD, keeps stdout in $out and stderr in $err, checks the
# exit status.
out='' err='' rc=0
run() {
    local name=$1 expected=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    if [ "$rc" -eq "$expected" ]; then
        pass "$name (exit $rc)"
    else
        fail "$name: exit $rc, expected $expected" "stdout: ${out:0:300} | stderr: ${err:0:300}"
    fi
}
# expect NAME TEXT PATTERN — TEXT contains PATTERN (a fixed string).
expect() {
    if [[ $2 == *"$3"* ]]; then pass "$1"; else fail "$1: missing $3" "got: ${2:0:400}"; fi
}
expect_not() {
    if [[ $2 != *"$3"* ]]; then pass "$1"; else fail "$1: unexpected $3" "got: ${2:0:400}"; fi
}

# --- server -------------------------------------------------------------------------------------
"$bin" migrate --create-database --dsn "$dsn" >"$tmp/migrate.log" 2>&1 || { cat "$tmp/migrate.log" >&2; echo "migrate failed" >&2; exit 1; }
WORKFLOWD_PAYMENT_LATENCY_MS=600000 WORKFLOWD_FULFILLMENT_LATENCY_MS=0 WORKFLOWD_PAYMENT_DECLINE_RATE=0 \
    WORKFLOWD_FULFILLMENT_FAILURE_RATE=0 \
    "$bin" serve --dsn "$dsn" --socket "$WORKFLOWD_SOCKET" --data-dir "$tmp" --no-migrate >"$tmp/server.log" 2>&1 &
server_pid=$!
ready=0
for _ in $(seq 1 300); do
    if [ -S "$WORKFLOWD_SOCKET" ] && echo '{"op":"ping"}' | socat - "UNIX-CONNECT:$WORKFLOWD_SOCKET" 2>/dev/null | grep -q '"ok":true'; then
        ready=1
        break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$ready" -eq 1 ] || { cat "$tmp/server.log" >&2; echo "the server did not become ready" >&2; exit 1; }

cd "$here"

# --- submit -------------------------------------------------------------------------------------
run "submit from arguments" 0 ./submit.sh sh-1 'Ann "Q" \ O'"'"'Neil' ann@example.com 'LAPTOP-1:Laptop:1:1299.99' 'M-1:Mouse: wireless:2:29.99'
expect "submit reply" "$out" '"foreign_id":"sh-1","status":"OrderCreated","created":true'
run "get after submit" 0 ./get.sh sh-1
expect "name escaped and returned exactly" "$out" '"customer_name":"Ann \"Q\" \\ O'"'"'Neil"'
expect "exact computed total" "$out" '"total":1359.97'
expect "item name with a colon" "$out" '"name":"Mouse: wireless"'
expect "exact price" "$out" '"price":29.99'
run "submit again while unfinished" 0 ./submit.sh sh-1 Ann ann@example.com 'L:Laptop:1:1'
expect "submit again: created false" "$out" '"created":false'

run "submit with --total" 0 ./submit.sh sh-2 Bob bob@example.com 'B:Book:3:0.15' --total 0.45
run "get sh-2" 0 ./get.sh sh-2
expect "total as given" "$out" '"total":0.45'

run "submit: empty stdin" 2 ./submit.sh -
printf '{\n  "id": "sh-3",\n  "customer_name": "Cleo",\n  "email": "cleo@example.com",\n  "items": [{"product_id": "P", "name": "Pen", "quantity": 1, "price": 2.50}],\n  "total": 2.50\n}\n' >"$tmp/order.json"
./submit.sh <"$tmp/order.json" >"$tmp/out" 2>"$tmp/err"
rc=$?
out=$(cat "$tmp/out")
if [ $rc -eq 0 ]; then pass "submit from stdin (exit 0)"; else fail "submit from stdin: exit $rc" "$(cat "$tmp/err")"; fi
expect "stdin order created" "$out" '"foreign_id":"sh-3"'

run "submit: invalid order is rejected" 0 ./submit.sh sh-bad '' dave@example.com 'P:Phone:1:799.00'
run "submit: bad item" 2 ./submit.sh sh-x Ann a@b.c 'nocolons'
expect "bad item message" "$err" "is not PRODUCT_ID:NAME:QUANTITY:PRICE"
run "submit: bad price" 2 ./submit.sh sh-x Ann a@b.c 'P:Pen:1:1,5'
run "submit: too few arguments" 2 ./submit.sh sh-x Ann
run "submit: server refuses a bad order id" 1 ./submit.sh '' Ann a@b.c 'P:Pen:1:1'
expect "BAD_REQUEST on stderr" "$err" "BAD_REQUEST: order.id"

# --- await --------------------------------------------------------------------------------------
run "await a rejected order" 0 ./await.sh sh-bad --timeout-ms 20000
expect "await: terminal status" "$out" '"status":"OrderRejected"'
run "await a reached status" 0 ./await.sh sh-1 --status OrderValidated --timeout-ms 20000
expect "await: run at OrderValidated" "$out" '"status":"OrderValidated"'
run "await a status by code" 0 ./await.sh sh-1 --status 2 --timeout-ms 20000
run "await TIMEOUT exits 4" 4 ./await.sh sh-1 --timeout-ms 200
expect "TIMEOUT on stderr" "$err" "TIMEOUT"
expect "TIMEOUT reply holds the run" "$out" '"run":{'
run "await UNREACHABLE exits 5" 5 ./await.sh sh-bad --status OrderCompleted
expect "UNREACHABLE on stderr" "$err" "UNREACHABLE"
run "await unknown status" 1 ./await.sh sh-1 --status NoSuchStatus
expect "unknown status is BAD_REQUEST" "$err" "BAD_REQUEST"
run "await: bad timeout" 2 ./await.sh sh-1 --timeout-ms soon

# --- get / history ------------------------------------------------------------------------------
run "get by foreign id" 0 ./get.sh sh-1
run_id=$(printf '%s' "$out" | sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p')
[ -n "$run_id" ] && pass "run id in get reply" || fail "run id in get reply" "$out"
run "get by --run-id" 0 ./get.sh --run-id "$run_id"
expect "get by run id: same run" "$out" "\"foreign_id\":\"sh-1\""
run "get NOT_FOUND exits 1" 1 ./get.sh no-such-order
expect "NOT_FOUND on stderr" "$err" "NOT_FOUND"
expect "error reply on stdout" "$out" '"ok":false'
run "get: no run given" 2 ./get.sh
run "get: both ids" 2 ./get.sh sh-1 --run-id "$run_id"
run "get --help" 0 ./get.sh --help
expect "usage text" "$out" "usage: get.sh"
run "history" 0 ./history.sh sh-bad
expect "history starts with OrderCreated" "$out" '"version":1,'
expect "history holds OrderRejected" "$out" '"status":"OrderRejected"'

# --- pause / resume / cancel ---------------------------------------------------------------------
run "pause" 0 ./pause.sh sh-2 --reason 'customer "called"'
expect "pause: Paused" "$out" '"run_state":"Paused"'
expect "pause: reason kept" "$out" '"reason":"customer \"called\""'
run "pause again: INVALID_STATE" 1 ./pause.sh sh-2
expect "INVALID_STATE on stderr" "$err" "INVALID_STATE"
run "resume" 0 ./resume.sh sh-2
expect "resume: Running" "$out" '"run_state":"Running"'
run "resume a running run: INVALID_STATE" 1 ./resume.sh sh-2
run "cancel" 0 ./cancel.sh --run-id "$run_id" --reason duplicate
expect "cancel: Cancelled" "$out" '"run_state":"Cancelled"'
run "cancel NOT_FOUND" 1 ./cancel.sh nobody
run "pause: unknown option" 2 ./pause.sh sh-2 --bogus

# --- stats --------------------------------------------------------------------------------------
run "stats" 0 ./stats.sh
expect "stats: counts by status" "$out" '"OrderRejected":1'
expect "stats: outbox" "$out" '"outbox":{'
run "stats: extra argument" 2 ./stats.sh extra

# --- watch --------------------------------------------------------------------------------------
run "watch --from earliest --count 4" 0 timeout 20 ./watch.sh --from earliest --count 4
seqs=$(printf '%s\n' "$out" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p' | tr '\n' ' ')
[ "$seqs" = "1 2 3 4 " ] && pass "watch: seqs 1..4 in order" || fail "watch: seqs 1..4 in order" "got: $seqs"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 4 ] && pass "watch: one line per event" || fail "watch: one line per event" "$out"
run "watch --from 2 --count 2 (resume)" 0 timeout 20 ./watch.sh --from 2 --count 2
seqs=$(printf '%s\n' "$out" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p' | tr '\n' ' ')
[ "$seqs" = "3 4 " ] && pass "watch: resumes after seq 2" || fail "watch: resumes after seq 2" "got: $seqs"
run "watch with filters" 0 timeout 20 ./watch.sh --from earliest --foreign-id sh-bad --status OrderRejected --count 1
expect "watch filter: the rejection" "$out" '"foreign_id":"sh-bad","run_id"'
expect "watch filter: status" "$out" '"status":"OrderRejected"'

# Live events: start watching from now, then cause an event, which must arrive.
./watch.sh --foreign-id sh-3 --count 1 >"$tmp/live" 2>"$tmp/live.err" &
watch_pid=$!
# The subscription is live once watch.sh says so on stderr.
for _ in $(seq 1 400); do
    grep -q 'subscribed' "$tmp/live.err" && break
    sleep 0.05
done
./pause.sh sh-3 --reason live >/dev/null
wait_deadline=$((SECONDS + 20))
while kill -0 "$watch_pid" 2>/dev/null && [ $SECONDS -lt $wait_deadline ]; do sleep 0.05; done
if kill -0 "$watch_pid" 2>/dev/null; then
    kill "$watch_pid"
    fail "watch: a live event arrives" "$(cat "$tmp/live") $(cat "$tmp/live.err")"
else
    wait "$watch_pid"
    watch_rc=$?
    live=$(cat "$tmp/live")
    [ $watch_rc -eq 0 ] && pass "watch live: exit 0" || fail "watch live: exit $watch_rc" "$(cat "$tmp/live.err")"
    expect "watch live: the pause event" "$live" '"run_state":"Paused","version":3'
fi

# Interrupt: watch runs until SIGINT/SIGTERM and then exits 0.
./watch.sh >"$tmp/w2" 2>&1 &
watch_pid=$!
for _ in $(seq 1 400); do
    grep -q 'subscribed' "$tmp/w2" && break
    sleep 0.05
done
expect "watch: says it is subscribed" "$(cat "$tmp/w2")" "subscribed; head is seq"
kill -TERM "$watch_pid"
wait "$watch_pid"
watch_rc=$?
[ $watch_rc -eq 0 ] && pass "watch: ends with exit 0 when interrupted" || fail "watch: interrupted exit $watch_rc" "$(cat "$tmp/w2")"

run "watch: bad --from" 2 ./watch.sh --from yesterday
run "watch: unknown status" 1 timeout 20 ./watch.sh --status Nope
expect "watch: BAD_REQUEST" "$err" "BAD_REQUEST"

# --- connection errors --------------------------------------------------------------------------
WORKFLOWD_SOCKET="$tmp/none.sock" run "get: no socket exits 3" 3 ./get.sh sh-1
WORKFLOWD_SOCKET="$tmp/none.sock" run "watch: no socket exits 3" 3 ./watch.sh
touch "$tmp/dead.sock"
rm -f "$tmp/dead.sock"
python3 - "$tmp/dead.sock" <<'EOF' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()
EOF
if [ -S "$tmp/dead.sock" ]; then
    WORKFLOWD_SOCKET="$tmp/dead.sock" run "get: nobody listening exits 3" 3 ./get.sh sh-1
fi

# --- stop ---------------------------------------------------------------------------------------
kill -TERM "$server_pid"
wait "$server_pid"
server_rc=$?
server_pid=''
[ $server_rc -eq 0 ] && pass "server stops on SIGTERM with exit 0" || fail "server exit $server_rc on SIGTERM" "$(tail -5 "$tmp/server.log")"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
