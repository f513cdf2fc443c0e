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
# A second server (its own database and socket) has the payment and fulfilment steps external,
# for callback.sh and worker.sh (retries after 100 ms, paused after 3 failures).
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
ext_dbname="${dbname}_ext"
ext_dsn="${WORKFLOWD_TEST_DSN%/}/$ext_dbname"
tmp="$(mktemp -d)"
export WORKFLOWD_SOCKET="$tmp/wf.sock"
ext_socket="$tmp/ext.sock"
server_pid=''
ext_pid=''

passed=0
failed=0
pass() { passed=$((passed + 1)); printf "ok   %s (%ss)\n" "$1" "$SECONDS"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; [ -n "${2:-}" ] && printf '     %s\n' "$2"; }

cleanup() {
    local pid
    for pid in "$server_pid" "$ext_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            wait "$pid"
        fi
    done
    local sock
    sock=$(printf '%s' "$WORKFLOWD_TEST_DSN" | sed -n 's/.*@unix(\([^)]*\)).*/\1/p')
    if [ -n "$sock" ] && command -v mariadb >/dev/null; then
        mariadb --no-defaults -S "$sock" -uroot -e "DROP DATABASE IF EXISTS \`$dbname\`; DROP DATABASE IF EXISTS \`$ext_dbname\`" 2>/dev/null
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

# --- external steps: callback.sh and worker.sh (a second server) --------------------------------
mkdir -p "$tmp/ext"
"$bin" migrate --create-database --dsn "$ext_dsn" >"$tmp/migrate-ext.log" 2>&1 || { cat "$tmp/migrate-ext.log" >&2; echo "migrate (ext) failed" >&2; exit 1; }
WORKFLOWD_EXTERNAL_STEPS=OrderValidated,PaymentProcessed WORKFLOWD_RETRY_BASE_DELAY=100ms WORKFLOWD_RETRY_MAX_ATTEMPTS=3 \
    WORKFLOWD_PAYMENT_TIMEOUT_MS=600000 WORKFLOWD_PAYMENT_LATENCY_MS=0 WORKFLOWD_FULFILLMENT_LATENCY_MS=0 \
    "$bin" serve --dsn "$ext_dsn" --socket "$ext_socket" --data-dir "$tmp/ext" --no-migrate >"$tmp/server-ext.log" 2>&1 &
ext_pid=$!
ready=0
for _ in $(seq 1 300); do
    if [ -S "$ext_socket" ] && echo '{"op":"ping"}' | socat - "UNIX-CONNECT:$ext_socket" 2>/dev/null | grep -q '"ok":true'; then
        ready=1
        break
    fi
    kill -0 "$ext_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$ready" -eq 1 ] || { cat "$tmp/server-ext.log" >&2; echo "the server with external steps did not become ready" >&2; exit 1; }
main_socket=$WORKFLOWD_SOCKET
export WORKFLOWD_SOCKET="$ext_socket"

# Commands for worker.sh: the order arrives on stdin; the answer is the next status, then the
# new order. No jq: sed fills in the id.
cat >"$tmp/pay.sh" <<'EOF'
#!/bin/sh
echo PaymentProcessed
sed "s/\"payment_id\":null/\"payment_id\":\"pay_${WF_IDEMPOTENCY_KEY%%-*}_$WF_ATTEMPT\"/"
EOF
cat >"$tmp/ship.sh" <<'EOF'
#!/bin/sh
echo OrderFulfilled
sed "s/\"tracking_id\":null/\"tracking_id\":\"trk_$WF_VERSION\"/"
EOF
cat >"$tmp/flaky.sh" <<'EOF'
#!/bin/sh
cat >/dev/null
if [ "$WF_ATTEMPT" = 1 ]; then echo "gateway down" >&2; exit 3; fi
echo "PaymentFailed payment declined"
EOF
cat >"$tmp/slow.sh" <<'EOF'
#!/bin/sh
touch "$WF_MARK"
sleep 1
echo PaymentProcessed
EOF
chmod +x "$tmp/pay.sh" "$tmp/ship.sh" "$tmp/flaky.sh" "$tmp/slow.sh"
# wait_status ID STATUS — awaits STATUS (exit 0) within 20 s.
wait_status() { ./await.sh "$1" --status "$2" --timeout-ms 20000 >/dev/null 2>&1; }

order_json='{"id":"ext-1","customer_name":"Ann","email":"ann@example.com","items":[{"product_id":"P","name":"Pen","quantity":1,"price":2.50}],"total":2.50,"payment_id":"pay_webhook"}'
./submit.sh ext-1 Ann ann@example.com 'P:Pen:1:2.50' >/dev/null
wait_status ext-1 OrderValidated && pass "callback: the run waits in OrderValidated" || fail "callback: the run waits in OrderValidated"
run "callback with an object" 0 ./callback.sh ext-1 OrderValidated PaymentProcessed "$order_json"
expect "callback: moved to PaymentProcessed" "$out" '"status":"PaymentProcessed"'
expect "callback: object replaced" "$out" '"payment_id":"pay_webhook"'
expect "callback: exact money" "$out" '"total":2.50'
run "callback twice: CONFLICT exits 1" 1 ./callback.sh ext-1 OrderValidated PaymentProcessed "$order_json"
expect "CONFLICT on stderr" "$err" "CONFLICT"
expect "CONFLICT reply holds the run" "$out" '"run":{'
run "callback: a next the step may not go to" 1 ./callback.sh ext-1 PaymentProcessed OrderCompleted
expect "callback: BAD_REQUEST names next" "$err" "BAD_REQUEST: next:"
run "callback: no next" 2 ./callback.sh ext-1 PaymentProcessed
run "callback: object not JSON" 2 ./callback.sh ext-1 PaymentProcessed OrderFulfilled 'not json'
run "callback: too many arguments" 2 ./callback.sh ext-1 PaymentProcessed OrderFulfilled '{}' extra
run "callback: no run" 2 ./callback.sh
run "callback NOT_FOUND" 1 ./callback.sh nobody OrderValidated PaymentProcessed
run "callback --help" 0 ./callback.sh --help
expect "callback usage" "$out" "usage: callback.sh"
ext_run=$(./get.sh ext-1 | sed -n 's/.*"run_id":"\([^"]*\)".*/\1/p')
run "callback by --run-id with codes and a reason" 0 ./callback.sh --run-id "$ext_run" 3 4 --reason 'shipped by "hand"'
expect "callback: OrderFulfilled" "$out" '"status":"OrderFulfilled"'
expect "callback: reason kept" "$out" '"reason":"shipped by \"hand\""'
run "callback: the run completes" 0 ./await.sh ext-1 --timeout-ms 20000
expect "callback: OrderCompleted" "$out" '"status":"OrderCompleted"'
./submit.sh ext-2 Bob bob@example.com 'B:Book:1:9.99' >/dev/null
wait_status ext-2 OrderValidated
printf '{\n "id": "ext-2", "customer_name": "Bob", "email": "bob@example.com",\n "items": [{"product_id": "B", "name": "Book", "quantity": 1, "price": 9.99}], "total": 9.99, "payment_id": "pay_stdin"}\n' \
    | ./callback.sh ext-2 OrderValidated PaymentProcessed - >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && pass "callback: object from stdin (exit 0)" || fail "callback: object from stdin: exit $rc" "$(cat "$tmp/err")"
expect "callback: stdin object stored" "$(cat "$tmp/out")" '"payment_id":"pay_stdin"'
./cancel.sh ext-2 >/dev/null

# worker.sh: three orders paid, then shipped, by two workers in turn.
for i in 3 4 5; do ./submit.sh "ext-$i" Cleo cleo@example.com 'P:Pen:2:1.25' >/dev/null; done
for i in 3 4 5; do wait_status "ext-$i" OrderValidated; done
run "worker: pays three orders" 0 timeout 30 ./worker.sh OrderValidated --max-in-flight 2 --count 3 -- "$tmp/pay.sh"
[ "$(printf '%s\n' "$out" | grep -c '^{"ok":true,"run":{.*"status":"PaymentProcessed"')" -eq 3 ] \
    && pass "worker: one reply per task on stdout" || fail "worker: one reply per task on stdout" "$out"
expect "worker: says what it works on" "$err" "working on OrderValidated"
expect "worker: a line per task on stderr" "$err" "OrderValidated attempt 1 -> PaymentProcessed"
run "worker: ships three orders" 0 timeout 30 ./worker.sh PaymentProcessed --count 3 -- "$tmp/ship.sh"
for i in 3 4 5; do
    run "worker: ext-$i completes" 0 ./await.sh "ext-$i" --timeout-ms 20000
    expect "worker: ext-$i OrderCompleted" "$out" '"status":"OrderCompleted"'
    expect "worker: ext-$i paid with its idempotency key" "$out" '"payment_id":"pay_'
    expect "worker: ext-$i shipped" "$out" '"tracking_id":"trk_3"'
    expect "worker: ext-$i exact money" "$out" '"total":2.5'
done

# A command that fails: the task is offered again (attempt 2) after the back-off.
./submit.sh ext-6 Dan dan@example.com 'P:Pen:1:1' >/dev/null
wait_status ext-6 OrderValidated
run "worker: a failing command fails the task, the retry completes it" 0 timeout 30 ./worker.sh OrderValidated --count 2 -- "$tmp/flaky.sh"
expect "worker: fail reply" "$out" '"retry_at":'
expect "worker: the command's stderr is the error" "$err" "attempt 1 -> fail: gateway down"
expect "worker: attempt 2" "$err" "attempt 2 -> PaymentFailed (payment declined)"
run "worker: the run ends PaymentFailed" 0 ./get.sh ext-6
expect "worker: declined with the reason" "$out" '"status":"PaymentFailed"'
expect "worker: reason from the command" "$out" '"reason":"payment declined"'

# An answer the server refuses (a status the payment may not go to) fails the task; at the retry
# limit the run is paused with the refusal as its reason.
./submit.sh ext-7 Eve eve@example.com 'P:Pen:1:1' >/dev/null
wait_status ext-7 OrderValidated
run "worker: refused answers are failed" 0 timeout 30 ./worker.sh OrderValidated --count 3 -- sh -c 'cat >/dev/null; echo OrderCompleted'
run "worker: paused at the retry limit" 0 ./get.sh ext-7
expect "worker: Paused" "$out" '"run_state":"Paused"'
expect "worker: the refusal is the reason" "$out" '"reason":"complete refused: BAD_REQUEST: status:'
./cancel.sh ext-7 >/dev/null

# SIGTERM: at once while idle; after the answer while a command runs.
./worker.sh PaymentProcessed -- "$tmp/ship.sh" >"$tmp/w-idle" 2>&1 &
wpid=$!
for _ in $(seq 1 200); do grep -q 'working on' "$tmp/w-idle" && break; sleep 0.05; done
kill -TERM "$wpid"
wait "$wpid"
wrc=$?
[ $wrc -eq 0 ] && pass "worker: SIGTERM while idle exits 0" || fail "worker: SIGTERM while idle: exit $wrc" "$(cat "$tmp/w-idle")"
./submit.sh ext-8 Fay fay@example.com 'P:Pen:1:1' >/dev/null
wait_status ext-8 OrderValidated
WF_MARK="$tmp/mark" ./worker.sh OrderValidated -- "$tmp/slow.sh" >"$tmp/w-busy" 2>"$tmp/w-busy.err" &
wpid=$!
for _ in $(seq 1 200); do [ -e "$tmp/mark" ] && break; sleep 0.05; done
kill -TERM "$wpid"
wait "$wpid"
wrc=$?
[ $wrc -eq 0 ] && pass "worker: SIGTERM during a task exits 0" || fail "worker: SIGTERM during a task: exit $wrc" "$(cat "$tmp/w-busy.err")"
expect "worker: the task in hand was answered" "$(cat "$tmp/w-busy")" '"status":"PaymentProcessed"'
run "worker: the run moved on" 0 ./get.sh ext-8
expect "worker: ext-8 at PaymentProcessed" "$out" '"status":"PaymentProcessed"'
run "stats: external statuses" 0 ./stats.sh
expect "stats: no worker left connected" "$out" '"status":"OrderValidated","waiting":0,"held":0,"scheduled":0,"oldest_waiting_ms":null,"workers":0'

run "worker: a status that is not external" 1 ./worker.sh OrderCreated -- true
expect "worker: BAD_REQUEST" "$err" "BAD_REQUEST: status:"
run "worker: no status" 2 ./worker.sh -- true
run "worker: no command" 2 ./worker.sh OrderValidated
run "worker: bad --count" 2 ./worker.sh OrderValidated --count x -- true
run "worker --help" 0 ./worker.sh --help
expect "worker usage" "$out" "usage: worker.sh"
WORKFLOWD_SOCKET="$tmp/none.sock" run "worker: no socket exits 3" 3 ./worker.sh OrderValidated -- true
WORKFLOWD_SOCKET="$tmp/none.sock" run "callback: no socket exits 3" 3 ./callback.sh ext-1 OrderValidated PaymentProcessed

kill -TERM "$ext_pid"
wait "$ext_pid"
ext_rc=$?
ext_pid=''
[ $ext_rc -eq 0 ] && pass "server with external steps stops on SIGTERM with exit 0" || fail "ext server exit $ext_rc on SIGTERM" "$(tail -5 "$tmp/server-ext.log")"
export WORKFLOWD_SOCKET="$main_socket"

# --- stop ---------------------------------------------------------------------------------------
kill -TERM "$server_pid"
wait "$server_pid"
server_rc=$?
server_pid=''
[ $server_rc -eq 0 ] && pass "server stops on SIGTERM with exit 0" || fail "server exit $server_rc on SIGTERM" "$(tail -5 "$tmp/server.log")"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
