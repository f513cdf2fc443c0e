#!/usr/bin/env bash
# A private MariaDB server in a folder: socket only, no TCP port, no systemd, no config files.
#
#   scripts/mariadb.sh start  [DIR]   initialise DIR on first use, start, wait until ready,
#                                     print the socket path (the only line on stdout)
#   scripts/mariadb.sh stop   [DIR]   shutdown, then SIGTERM, then SIGKILL; no-op if stopped
#   scripts/mariadb.sh status [DIR]   print the state; exit 0 if running, 1 if not
#   scripts/mariadb.sh env    [DIR]   print: export WORKFLOWD_TEST_DSN='user@unix(DIR/mysqld.sock)/'
#
# DIR defaults to $WORKFLOWD_TEST_DB_DIR, else .tmp/mariadb in the repository (git-ignored).
# Login is unix_socket authentication as the current OS user (root when run as root).
# Same folder layout and lock file as PrivateMariaDB in Sources/WorkflowMariaDB, so the two can
# share a folder: whichever starts first, the other reuses the server.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command="${1:-}"
dir="${2:-${WORKFLOWD_TEST_DB_DIR:-$repo/.tmp/mariadb}}"
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac

sock="$dir/mysqld.sock"
pidfile="$dir/mysqld.pid"
errlog="$dir/error.log"
datadir="$dir/data"
start_timeout="${WORKFLOWD_DB_START_TIMEOUT:-60}"
stop_timeout="${WORKFLOWD_DB_STOP_TIMEOUT:-30}"

if [ "$(id -u)" -eq 0 ]; then user=root; else user="$(id -un)"; fi

say() { printf 'mariadb.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Debian keeps mariadbd in /usr/sbin, which a non-root PATH lacks.
export PATH="$PATH:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
# Client variables in the caller's environment must not redirect or authenticate our tools.
unset MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD

find_tool() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    done
    die "$1 not found; install mariadb-server and mariadb-client (scripts/install-deps.sh)"
}

admin() { "$ADMIN" --no-defaults --socket="$sock" --user="$user" --connect-timeout=2 "$@"; }

# mariadb-admin ping exits 0 whenever a server answers, even if it refuses the account.
ping_ok() { [ -S "$sock" ] && admin ping >/dev/null 2>&1; }

# The pid in the pid file if that process is alive, not a zombie, and a MariaDB server.
live_pid() {
    local pid comm state
    [ -f "$pidfile" ] || return 1
    pid="$(tr -dc '0-9' <"$pidfile")"
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/stat" ]; then
        state="$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)"
        [ "$state" != Z ] || return 1
        comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
        case "$comm" in mariadbd* | mysqld*) ;; *) return 1 ;; esac
    fi
    echo "$pid"
}

log_tail() {
    if [ -s "$1" ]; then
        say "last lines of $1:"
        tail -n 20 "$1" | sed 's/^/    /' >&2
    else
        say "($1 is empty or missing)"
    fi
}

wait_for() { # wait_for SECONDS COMMAND...: true as soon as COMMAND succeeds
    local deadline=$((SECONDS + $1)); shift
    while :; do
        if "$@"; then return 0; fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

not_alive() { ! kill -0 "$1" 2>/dev/null || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }
not_answering() { ! ping_ok; }

# Serialise start/stop on this folder (the same lock file PrivateMariaDB uses). fd 9 is closed
# for the server below, or it would hold the lock for its whole life.
take_lock() {
    mkdir -p "$dir" "$dir/tmp"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$dir/.lock"
        flock 9
    fi
}

check_socket_length() {
    local length=${#sock}
    if [ "$length" -gt 107 ]; then
        die "the socket path $sock is $length bytes; Unix sockets allow at most 107. Set WORKFLOWD_TEST_DB_DIR (or pass DIR) to a shorter folder, e.g. under /tmp."
    fi
}

do_start() {
    check_socket_length
    SERVER="$(find_tool mariadbd mysqld)"
    INSTALL_DB="$(find_tool mariadb-install-db mysql_install_db)"
    take_lock

    if ping_ok; then
        say "already running on $sock"
        echo "$sock"
        return 0
    fi
    local pid
    if pid="$(live_pid)"; then
        say "mariadbd (pid $pid) owns $dir; waiting for it to answer"
        wait_for "$start_timeout" ping_ok || { log_tail "$errlog"; die "mariadbd (pid $pid) does not answer on $sock"; }
        echo "$sock"
        return 0
    fi
    rm -f "$pidfile" "$sock"

    if [ ! -d "$datadir/mysql" ]; then
        say "initialising $datadir"
        local created=0
        [ -e "$datadir" ] || created=1
        if ! "$INSTALL_DB" --no-defaults --user="$user" --datadir="$datadir" \
            --auth-root-authentication-method=socket --skip-test-db --tmpdir="$dir/tmp" \
            </dev/null >"$dir/install.log" 2>&1; then
            log_tail "$dir/install.log"
            # A half-initialised datadir would be trusted by the next start.
            [ "$created" -eq 0 ] || rm -rf "$datadir"
            die "mariadb-install-db failed for $datadir"
        fi
    fi

    local args=(--no-defaults) # must be first
    [ "$user" != root ] || args+=(--user=root)
    args+=(
        --datadir="$datadir"
        --socket="$sock"
        --skip-networking
        --pid-file="$pidfile"
        --log-error="$errlog"
        --tmpdir="$dir/tmp"
        --character-set-server=utf8mb4
        --collation-server=utf8mb4_unicode_ci
        --max-connections=500
        --innodb-buffer-pool-size=256M
    )
    say "starting mariadbd in $dir"
    (
        # The server must hold none of our descriptors: not our stdio (a caller's $(...) would
        # wait for the server), not the lock on fd 9, and not whatever a parent process uses to
        # see this script exit (Foundation's Process waits for EOF on a socket it passes down).
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            case "$fd" in 0 | 1 | 2 | *[!0-9]*) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
        done
        exec 9>&- </dev/null >>"$errlog" 2>&1
        if command -v setsid >/dev/null 2>&1; then
            exec setsid "$SERVER" "${args[@]}"
        fi
        exec "$SERVER" "${args[@]}"
    ) &
    local launched=$!

    local deadline=$((SECONDS + start_timeout))
    while ! ping_ok; do
        # setsid forks when it is a process-group leader; trust the pid file over $!.
        if ! kill -0 "$launched" 2>/dev/null && ! live_pid >/dev/null; then
            log_tail "$errlog"
            die "mariadbd exited before it answered on $sock"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail "$errlog"
            kill "$launched" 2>/dev/null || true
            die "mariadbd did not answer on $sock within ${start_timeout}s"
        fi
        sleep 0.1
    done
    say "ready on $sock"
    echo "$sock"
}

do_stop() {
    [ -d "$dir" ] || { say "nothing to stop in $dir"; return 0; }
    ADMIN="${ADMIN:-$(find_tool mariadb-admin mysqladmin)}"
    take_lock
    local pid="" answering=0
    pid="$(live_pid)" || pid=""
    ping_ok && answering=1
    if [ "$answering" -eq 0 ] && [ -z "$pid" ]; then
        rm -f "$pidfile" "$sock"
        say "not running in $dir"
        return 0
    fi
    say "stopping mariadbd in $dir"
    if [ "$answering" -eq 1 ]; then
        timeout "$stop_timeout" "$ADMIN" --no-defaults --socket="$sock" --user="$user" \
            --connect-timeout=2 shutdown </dev/null >/dev/null 2>&1 || true
    fi
    if [ -n "$pid" ]; then
        if ! wait_for "$stop_timeout" not_alive "$pid"; then
            say "still running after shutdown; sending SIGTERM to $pid"
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for "$stop_timeout" not_alive "$pid"; then
                say "still running after SIGTERM; sending SIGKILL to $pid"
                kill -KILL "$pid" 2>/dev/null || true
                wait_for 10 not_alive "$pid" || die "mariadbd (pid $pid) survived SIGKILL"
            fi
        fi
    elif ! wait_for "$stop_timeout" not_answering; then
        die "the server on $sock still answers after shutdown and has no pid file to signal"
    fi
    rm -f "$pidfile" "$sock"
    say "stopped"
}

do_status() {
    local pid
    if ping_ok; then
        pid="$(live_pid)" || pid="?"
        echo "running: pid $pid, socket $sock"
        return 0
    fi
    if pid="$(live_pid)"; then
        echo "starting or unresponsive: pid $pid, socket $sock"
        return 1
    fi
    echo "stopped: $dir"
    return 1
}

case "$command" in
    start)
        ADMIN="$(find_tool mariadb-admin mysqladmin)"
        do_start
        ;;
    stop)
        do_stop
        ;;
    status)
        ADMIN="$(find_tool mariadb-admin mysqladmin)"
        do_status
        ;;
    env)
        printf "export WORKFLOWD_TEST_DSN='%s@unix(%s)/'\n" "$user" "$sock"
        ;;
    *)
        echo "usage: $0 start|stop|status|env [DIR]" >&2
        exit 2
        ;;
esac
