#!/usr/bin/env bash
# A private 3-node MariaDB Galera cluster on loopback, in a folder: no systemd, no config files.
# For tests and for trying things out; not for production.
#
#   scripts/galera.sh start     [DIR]  initialise DIR on first use, bootstrap one node, join the
#                                      other two, wait until all three are Synced in a cluster of 3,
#                                      print the three socket paths (the only lines on stdout)
#   scripts/galera.sh stop      [DIR]  stop nodes 2 and 3, then node 1 (shutdown, then SIGTERM, then
#                                      SIGKILL); no-op if stopped
#   scripts/galera.sh status    [DIR]  one line per node; exit 0 if all three run and are Synced
#   scripts/galera.sh kill N    [DIR]  SIGKILL node N's mariadbd (N = 1..3), like a crash
#   scripts/galera.sh restart N [DIR]  start node N again and wait until it is Synced (IST when the
#                                      cluster's gcache still holds what it missed, else SST);
#                                      prints node N's socket path
#   scripts/galera.sh env       [DIR]  print: export WORKFLOWD_GALERA_DSNS='user@unix(DIR/node1/mysqld.sock)/ ...'
#
# DIR defaults to $WORKFLOWD_GALERA_DIR, else /tmp/workflowd-galera-$(id -u) (short: Unix socket
# paths must stay under 108 bytes). Node N lives in DIR/nodeN: data/, mysqld.sock, mysqld.pid,
# error.log, tmp/. Login is unix_socket authentication as the current OS user (root when root).
#
# Ports, all on 127.0.0.1, from WORKFLOWD_GALERA_PORT_BASE (default 14400) as B: node N uses
# B+N*10 for SQL, +1 for group communication (gcomm), +2 for IST, +3 for SST (rsync).
# Timeouts: WORKFLOWD_GALERA_START_TIMEOUT (per node, default 180 s; a first join copies the data
# by SST) and WORKFLOWD_GALERA_STOP_TIMEOUT (per step, default 30 s).
set -euo pipefail

command="${1:-}"
node_arg=""
case "$command" in
    kill | restart)
        node_arg="${2:-}"
        dir="${3:-}"
        ;;
    *) dir="${2:-}" ;;
esac
dir="${dir:-${WORKFLOWD_GALERA_DIR:-/tmp/workflowd-galera-$(id -u)}}"
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac
dir="${dir%/}"

port_base="${WORKFLOWD_GALERA_PORT_BASE:-14400}"
start_timeout="${WORKFLOWD_GALERA_START_TIMEOUT:-180}"
stop_timeout="${WORKFLOWD_GALERA_STOP_TIMEOUT:-30}"
cluster_name=workflowd
nodes=(1 2 3)

if [ "$(id -u)" -eq 0 ]; then user=root; else user="$(id -un)"; fi

say() { printf 'galera.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Debian keeps mariadbd in /usr/sbin, which a non-root PATH lacks.
export PATH="$PATH:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
# Client variables in the caller's environment must not redirect or authenticate our tools.
unset MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD

case "$port_base" in '' | *[!0-9]*) die "WORKFLOWD_GALERA_PORT_BASE must be a number, not '$port_base'" ;; esac
if [ "$port_base" -lt 1024 ] || [ "$port_base" -gt 65500 ]; then
    die "WORKFLOWD_GALERA_PORT_BASE=$port_base: pick a base between 1024 and 65500"
fi

declare -a NDIR DATA SOCK PIDF ERRLOG PORT GPORT IPORT SPORT RECOVERED LAUNCHED LOG_OFFSET MODE
gcomm_peers=""
for n in "${nodes[@]}"; do
    NDIR[n]="$dir/node$n"
    DATA[n]="$dir/node$n/data"
    SOCK[n]="$dir/node$n/mysqld.sock"
    PIDF[n]="$dir/node$n/mysqld.pid"
    ERRLOG[n]="$dir/node$n/error.log"
    PORT[n]=$((port_base + n * 10))
    GPORT[n]=$((port_base + n * 10 + 1))
    IPORT[n]=$((port_base + n * 10 + 2))
    SPORT[n]=$((port_base + n * 10 + 3))
    RECOVERED[n]=""
    gcomm_peers="${gcomm_peers:+$gcomm_peers,}127.0.0.1:${GPORT[n]}"
done

find_tool() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    done
    die "$1 not found; install mariadb-server and mariadb-client (scripts/install-deps.sh)"
}

find_provider() {
    local f
    for f in "${WORKFLOWD_GALERA_PROVIDER:-}" /usr/lib/galera/libgalera_smm.so /usr/lib/libgalera_smm.so \
        /usr/lib64/galera-4/libgalera_smm.so /usr/lib64/galera/libgalera_smm.so \
        /usr/lib/x86_64-linux-gnu/galera/libgalera_smm.so /usr/lib/aarch64-linux-gnu/galera/libgalera_smm.so; do
        if [ -n "$f" ] && [ -r "$f" ]; then echo "$f"; return 0; fi
    done
    die "the Galera provider libgalera_smm.so is not installed; install galera-4 (apt-get install galera-4)"
}

# The stock SST script, not our copy in DIR/bin (in case the caller's PATH has it).
find_sst_script() {
    local d
    for d in "$(dirname "$SERVER")/../bin" /usr/bin /usr/local/bin $(printf '%s' "$PATH" | tr ':' ' '); do
        [ "$d" != "$dir/bin" ] || continue
        if [ -f "$d/wsrep_sst_rsync" ] && [ -f "$d/wsrep_sst_common" ]; then
            (cd "$d" && pwd)
            return 0
        fi
    done
    die "wsrep_sst_rsync not found; install mariadb-server (it ships the Galera SST scripts)"
}

tools() {
    SERVER="$(find_tool mariadbd mysqld)"
    ADMIN="$(find_tool mariadb-admin mysqladmin)"
    CLIENT="$(find_tool mariadb mysql)"
}

admin() { # admin N ARGS...
    local n=$1; shift
    "$ADMIN" --no-defaults --socket="${SOCK[n]}" --user="$user" --connect-timeout=2 "$@" </dev/null
}

# mariadb-admin ping exits 0 whenever a server answers, even if it refuses the account.
ping_ok() { [ -S "${SOCK[$1]}" ] && admin "$1" ping >/dev/null 2>&1; }

# The pid of node N's mariadbd: from its pid file, else from the pid we launched (the pid file is
# written late, after an SST), if that process is alive, not a zombie, a MariaDB server, and was
# started on node N's datadir (so a stale pid file never points us at someone else's server).
live_pid() {
    local n=$1 f pid comm state cmdline
    for f in "${PIDF[n]}" "${NDIR[n]}/launched.pid"; do
        [ -f "$f" ] || continue
        pid="$(tr -dc '0-9' <"$f")"
        [ -n "$pid" ] || continue
        kill -0 "$pid" 2>/dev/null || continue
        if [ -r "/proc/$pid/stat" ]; then
            state="$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)"
            [ "$state" != Z ] || continue
            comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
            case "$comm" in mariadbd* | mysqld*) ;; *) continue ;; esac
            cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null || true)"
            grep -qxF -- "--datadir=${DATA[n]}" <<<"$cmdline" || continue
        fi
        echo "$pid"
        return 0
    done
    return 1
}

running() { live_pid "$1" >/dev/null || ping_ok "$1"; }

# wsrep_status N: prints "STATE SIZE CLUSTER_STATUS READY LAST_COMMITTED", e.g.
# "Synced 3 Primary ON 42".
# SHOW STATUS works even while the node is not ready for other queries.
wsrep_status() {
    local out
    out="$("$CLIENT" --no-defaults --socket="${SOCK[$1]}" --user="$user" --connect-timeout=2 -N -B \
        -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_last_committed')" \
        </dev/null 2>/dev/null)" || return 1
    printf '%s\n' "$out" | awk -F'\t' '
        { v[tolower($1)] = $2 }
        END {
            s = v["wsrep_local_state_comment"]; if (s == "") s = "?"
            z = v["wsrep_cluster_size"]; if (z == "") z = "?"
            c = v["wsrep_cluster_status"]; if (c == "") c = "?"
            r = v["wsrep_ready"]; if (r == "") r = "?"
            l = v["wsrep_last_committed"]; if (l == "") l = -1
            print s, z, c, r, l
        }'
}

# synced N [SIZE]: node N answers, is Synced in a Primary component and ready (and, with SIZE,
# sees a cluster of SIZE nodes).
synced() {
    local out st size cstat ready
    [ -S "${SOCK[$1]}" ] || return 1
    out="$(wsrep_status "$1")" || return 1
    read -r st size cstat ready _ <<<"$out"
    [ "$st" = Synced ] && [ "$cstat" = Primary ] && [ "$ready" = ON ] || return 1
    [ -z "${2:-}" ] || [ "$size" = "$2" ]
}

any_synced() { # any_synced N...: one of the nodes is Synced in a Primary component
    local n
    for n in "$@"; do
        if synced "$n"; then return 0; fi
    done
    return 1
}

# rebootstrap_candidate N...: if all these nodes answer and are non-Primary, set BOOT to the one
# with the highest last committed seqno.
rebootstrap_candidate() {
    local n out st size cstat ready last best=-2
    BOOT=""
    for n in "$@"; do
        out="$(wsrep_status "$n")" || return 1
        read -r st size cstat ready last <<<"$out"
        [ "$cstat" = non-Primary ] || return 1
        case "$last" in '' | *[!0-9-]*) last=-1 ;; esac
        if [ "$last" -gt "$best" ]; then BOOT=$n; best=$last; fi
    done
    [ -n "$BOOT" ]
}

cluster_size_is() { # cluster_size_is N SIZE: node N's view has SIZE members, whatever its state
    local out st size
    out="$(wsrep_status "$1")" || return 1
    read -r st size _ <<<"$out"
    [ "$size" = "$2" ]
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
        sleep 0.2
    done
}

not_alive() { ! kill -0 "$1" 2>/dev/null || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]; }
not_answering() { ! ping_ok "$1"; }

# Serialise start/stop/kill/restart on this folder. fd 9 is closed for the servers, or they
# would hold the lock for their whole life.
take_lock() {
    mkdir -p "$dir"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$dir/.lock"
        flock 9
    fi
}

check_socket_length() {
    local n length
    for n in "${nodes[@]}"; do
        length=${#SOCK[n]}
        if [ "$length" -gt 107 ]; then
            die "the socket path ${SOCK[n]} is $length bytes; Unix sockets allow at most 107. Set WORKFLOWD_GALERA_DIR (or pass DIR) to a shorter folder, e.g. under /tmp."
        fi
    done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() { # check_ports N: node N's ports must be free before it starts
    local n=$1 p
    for p in "${PORT[n]}" "${GPORT[n]}" "${IPORT[n]}" "${SPORT[n]}"; do
        if port_busy "$p"; then
            die "port $p on 127.0.0.1 (for node$n) is in use by another process; set WORKFLOWD_GALERA_PORT_BASE to another base (now $port_base)"
        fi
    done
}

# The stock rsync SST, run as root without systemd, fails with "Permission denied (13)": the
# rsync daemon it starts on the joiner drops to uid nobody (its generated rsyncd.conf has no
# "uid =" line) and cannot write the root-owned datadir. DIR/bin holds a copy of the script that
# keeps the daemon as the current user, under the same name (so the method is still "rsync");
# the servers run with DIR/bin first in PATH (see launch). A non-root rsync daemon does not
# switch users at all (and may not call setgroups), so for a non-root user only the log line is
# added: "galera.sh copy ..." in a node's error.log shows that this copy ran.
setup_sst_bin() {
    local src tmp
    src="$(find_sst_script)"
    mkdir -p "$dir/bin"
    ln -sfn "$src/wsrep_sst_common" "$dir/bin/wsrep_sst_common"
    tmp="$dir/bin/.wsrep_sst_rsync.$$"
    local sed_args=(-e "/^\\. .*wsrep_sst_common/a wsrep_log_info \"galera.sh copy \$0, rsync daemon as $user\"")
    if [ "$(id -u)" -eq 0 ]; then
        local group
        group="$(id -gn)"
        sed_args+=(-e "/^use chroot = no\$/a uid = $user" -e "/^use chroot = no\$/a gid = $group")
    fi
    sed "${sed_args[@]}" "$src/wsrep_sst_rsync" >"$tmp"
    if ! grep -q '^wsrep_log_info "galera.sh copy' "$tmp" ||
        { [ "$(id -u)" -eq 0 ] && { ! grep -qx "uid = $user" "$tmp" || ! grep -qx "gid = $group" "$tmp"; }; }; then
        rm -f "$tmp"
        die "could not patch $src/wsrep_sst_rsync (its lines differ from MariaDB 10.11's); the SST fix in $0 needs updating"
    fi
    chmod 755 "$tmp"
    mv -f "$tmp" "$dir/bin/wsrep_sst_rsync"
    local base
    base="$(cd "$(dirname "$SERVER")/.." && pwd)"
    sst_path_guard="$base//bin"
    [ "$base" = /usr ] || sst_path_guard="$sst_path_guard:/usr//bin"
}

grastate() { # grastate N FIELD: uuid, seqno or safe_to_bootstrap from node N's grastate.dat
    local f="${DATA[$1]}/grastate.dat"
    [ -f "$f" ] || return 0
    sed -n "s/^$2:[[:space:]]*//p" "$f" | tail -n 1 | tr -d '[:space:]'
}

has_data() { [ -d "${DATA[$1]}/mysql" ]; }

# server_args N: the command line of node N's mariadbd, in ARGS.
server_args() {
    local n=$1
    ARGS=(--no-defaults) # must be first
    [ "$user" != root ] || ARGS+=(--user=root)
    ARGS+=(
        --datadir="${DATA[n]}"
        --socket="${SOCK[n]}"
        --port="${PORT[n]}"
        --bind-address=127.0.0.1 # SST and IST need networking; only loopback
        --pid-file="${PIDF[n]}"
        --log-error="${ERRLOG[n]}"
        --tmpdir="${NDIR[n]}/tmp"
        --character-set-server=utf8mb4
        --collation-server=utf8mb4_unicode_ci
        --max-connections=500
        --innodb-buffer-pool-size=128M # three nodes share a small machine
        --binlog-format=ROW
        --default-storage-engine=InnoDB
        --innodb-autoinc-lock-mode=2
        # Acceptable for a test cluster only: a commit is on all nodes, but a node's own last
        # second of commits may be lost if its host (not just mariadbd) crashes.
        --innodb-flush-log-at-trx-commit=2
        --wsrep-on=ON
        --wsrep-provider="$PROVIDER"
        --wsrep-cluster-name="$cluster_name"
        --wsrep-cluster-address="gcomm://$gcomm_peers"
        --wsrep-node-name="node$n"
        --wsrep-node-address=127.0.0.1
        # A gcache of 128M keeps enough write sets for a restarted node to catch up by IST.
        --wsrep-provider-options="gmcast.listen_addr=tcp://127.0.0.1:${GPORT[n]};ist.recv_addr=127.0.0.1:${IPORT[n]};gcache.size=128M"
        --wsrep-sst-method=rsync
        --wsrep-sst-receive-address="127.0.0.1:${SPORT[n]}"
        --wsrep-slave-threads=2
    )
}

# recover_position N: after a crash grastate.dat has seqno -1; ask InnoDB for the last committed
# position (mariadbd --wsrep-recover, as galera_recovery does under systemd). Sets RECOVERED[N]
# to UUID:SEQNO, or leaves it empty if there is none.
recover_position() {
    local n=$1 log="${NDIR[$1]}/recover.log" pos
    [ -z "${RECOVERED[n]}" ] || return 0
    has_data "$n" || return 0
    server_args "$n"
    rm -f "$log"
    say "node$n: grastate.dat has no position (a crash); running mariadbd --wsrep-recover"
    if ! (
        exec 9>&- </dev/null >>"$log" 2>&1
        exec timeout "$start_timeout" "$SERVER" "${ARGS[@]}" --wsrep-recover --log-error="$log" \
            --pid-file="${NDIR[n]}/recover.pid" --socket="${NDIR[n]}/recover.sock" --skip-networking
    ); then
        log_tail "$log"
        say "node$n: mariadbd --wsrep-recover failed; it will start without a position (full SST)"
        return 0
    fi
    pos="$(sed -n 's/.*WSREP: Recovered position: *//p' "$log" | tail -n 1 | tr -d '[:space:]')"
    case "$pos" in
        *:-1 | "" | 00000000-0000-0000-0000-000000000000:*)
            say "node$n: no position recovered; it will join by SST"
            ;;
        *:*)
            RECOVERED[n]="$pos"
            say "node$n: recovered position $pos"
            ;;
    esac
}

initialise_node1() {
    local INSTALL_DB created=0
    INSTALL_DB="$(find_tool mariadb-install-db mysql_install_db)"
    say "initialising ${DATA[1]} (nodes 2 and 3 get their data by SST)"
    [ -e "${DATA[1]}" ] || created=1
    mkdir -p "${NDIR[1]}/tmp"
    if ! "$INSTALL_DB" --no-defaults --user="$user" --datadir="${DATA[1]}" \
        --auth-root-authentication-method=socket --skip-test-db --tmpdir="${NDIR[1]}/tmp" \
        </dev/null >"${NDIR[1]}/install.log" 2>&1; then
        log_tail "${NDIR[1]}/install.log"
        # A half-initialised datadir would be trusted by the next start.
        [ "$created" -eq 0 ] || rm -rf "${DATA[1]}"
        die "mariadb-install-db failed for ${DATA[1]}"
    fi
}

# launch N bootstrap|join: start node N's mariadbd detached, without waiting.
launch() {
    local n=$1 mode=$2 seqno
    check_ports "$n"
    mkdir -p "${DATA[n]}" "${NDIR[n]}/tmp"
    rm -f "${PIDF[n]}" "${SOCK[n]}" "${NDIR[n]}/launched.pid"
    seqno="$(grastate "$n" seqno)"
    if [ "$seqno" = -1 ]; then recover_position "$n"; fi
    server_args "$n"
    if [ "$mode" = bootstrap ]; then
        ARGS+=(--wsrep-new-cluster)
        if [ -f "${DATA[n]}/grastate.dat" ]; then
            sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 1/' "${DATA[n]}/grastate.dat"
        fi
        # A crashed node's saved view would make it wait for its old peers.
        rm -f "${DATA[n]}/gvwstate.dat"
    fi
    [ -z "${RECOVERED[n]}" ] || ARGS+=(--wsrep-start-position="${RECOVERED[n]}")
    LOG_OFFSET[n]=1
    if [ -f "${ERRLOG[n]}" ]; then LOG_OFFSET[n]=$(($(wc -c <"${ERRLOG[n]}") + 1)); fi
    MODE[n]=$mode
    if [ "$mode" = bootstrap ]; then
        say "node$n: bootstrapping a new cluster${RECOVERED[n]:+ at ${RECOVERED[n]}}"
    else
        say "node$n: starting and joining the cluster${RECOVERED[n]:+ from ${RECOVERED[n]}}"
    fi
    (
        # The server must hold none of our descriptors: not our stdio (a caller's $(...) would
        # wait for the server), not the lock on fd 9, and not whatever a parent process uses to
        # see this script exit (Foundation's Process waits for EOF on a socket it passes down).
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            case "$fd" in 0 | 1 | 2 | *[!0-9]*) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
        done
        exec 9>&- </dev/null >>"${ERRLOG[n]}" 2>&1
        # DIR/bin first: the SST script copy that works as root (see setup_sst_bin). mariadbd
        # prepends BASEDIR/bin (on Debian literally "/usr//bin") to PATH before it runs an SST
        # script, unless PATH already contains that string: so it goes right after DIR/bin.
        export PATH="$dir/bin:$sst_path_guard:$PATH"
        if command -v setsid >/dev/null 2>&1; then
            exec setsid "$SERVER" "${ARGS[@]}"
        fi
        exec nohup "$SERVER" "${ARGS[@]}"
    ) &
    LAUNCHED[n]=$!
    disown "${LAUNCHED[n]}" 2>/dev/null || true # no "Killed"/"Aborted" notes from this shell
    echo "${LAUNCHED[n]}" >"${NDIR[n]}/launched.pid"
}

# wait_synced N: wait until node N is Synced in a Primary component; die with its log if it
# exits or takes too long.
wait_synced() {
    local n=$1 t0=$SECONDS deadline=$((SECONDS + start_timeout))
    while ! synced "$n"; do
        if ! live_pid "$n" >/dev/null && { [ -z "${LAUNCHED[n]:-}" ] || not_alive "${LAUNCHED[n]}"; }; then
            log_tail "${ERRLOG[n]}"
            sst_hint "$n"
            die "node$n's mariadbd exited before it was Synced (see ${ERRLOG[n]})"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail "${ERRLOG[n]}"
            die "node$n was not Synced within ${start_timeout}s (state: $(wsrep_status "$n" || echo 'not answering'); see ${ERRLOG[n]})"
        fi
        sleep 0.2
    done
    say "node$n: Synced after $((SECONDS - t0))s$(transfer_note "$n")"
}

# If a state transfer ran the stock script instead of DIR/bin's copy, say so.
sst_hint() {
    local n=$1 new
    new="$(tail -c "+${LOG_OFFSET[n]:-1}" "${ERRLOG[n]}" 2>/dev/null || true)"
    if grep -q "wsrep_sst_rsync --role 'joiner'" <<<"$new" && ! grep -q 'galera.sh copy' <<<"$new"; then
        say "node$n ran the stock wsrep_sst_rsync, not $dir/bin/wsrep_sst_rsync (see setup_sst_bin in $0)"
    fi
}

# How the node got its state, from what it logged since launch.
transfer_note() {
    local n=$1 new
    [ -n "${LOG_OFFSET[n]:-}" ] || return 0
    if [ "${MODE[n]:-}" = bootstrap ]; then echo " (bootstrapped the cluster)"; return 0; fi
    new="$(tail -c "+${LOG_OFFSET[n]}" "${ERRLOG[n]}" 2>/dev/null || true)"
    # The joiner logs "SST succeeded" and "IST received" either way; the script's line tells.
    if grep -q 'rsync SST completed on joiner' <<<"$new"; then
        echo " (state transfer: SST, a full copy by rsync)"
    elif grep -qE 'rsync IST completed on joiner|Receiving IST: [0-9]+ writesets' <<<"$new"; then
        echo " (state transfer: IST, $(sed -n 's/.*Receiving IST: \([0-9]*\) writesets.*/\1/p' <<<"$new" | tail -n 1) write sets)"
    else
        echo " (no state transfer needed)"
    fi
}

# choose_bootstrap: with no node running, set BOOT to the node to bootstrap from: the one marked
# safe_to_bootstrap (the last one stopped cleanly), else the one with the highest seqno (after
# a crash, recovered from InnoDB), node 1 on a tie. Not in a subshell: it fills RECOVERED.
choose_bootstrap() {
    local n best_seqno=-2 seqno
    BOOT=""
    for n in "${nodes[@]}"; do
        if has_data "$n" && [ "$(grastate "$n" safe_to_bootstrap)" = 1 ]; then
            BOOT=$n
            say "node$n is marked safe_to_bootstrap (the last node stopped)"
            return 0
        fi
    done
    for n in "${nodes[@]}"; do
        has_data "$n" || continue
        seqno="$(grastate "$n" seqno)"
        if [ -z "$seqno" ] || [ "$seqno" = -1 ]; then
            recover_position "$n"
            seqno="${RECOVERED[n]##*:}"
        fi
        case "$seqno" in '' | *[!0-9-]*) seqno=-1 ;; esac
        if [ "$seqno" -gt "$best_seqno" ]; then BOOT=$n; best_seqno=$seqno; fi
    done
    [ -n "$BOOT" ] || return 1
    say "no node is marked safe_to_bootstrap; bootstrapping from node$BOOT, which has the highest seqno ($best_seqno)"
}

do_start() {
    check_socket_length
    tools
    PROVIDER="$(find_provider)"
    command -v rsync >/dev/null 2>&1 || die "rsync not found; install rsync (Galera's SST uses it)"
    take_lock
    setup_sst_bin

    local n up=() boot=""
    for n in "${nodes[@]}"; do
        if running "$n"; then up+=("$n"); else check_ports "$n"; fi
    done

    if [ "${#up[@]}" -eq 0 ]; then
        if ! has_data 1 && ! has_data 2 && ! has_data 3; then
            initialise_node1
            boot=1
        else
            choose_bootstrap || die "no node has data to bootstrap from"
            boot=$BOOT
        fi
        launch "$boot" bootstrap
        wait_synced "$boot"
    else
        say "already running: ${up[*]/#/node}"
        # One running member must be Synced in a Primary component for the others to join. A
        # survivor whose peers crashed has lost quorum and stays non-Primary: bootstrap it again.
        if ! wait_for 5 any_synced "${up[@]}"; then
            if rebootstrap_candidate "${up[@]}"; then
                say "node$BOOT lost quorum (non-Primary); bootstrapping it again (pc.bootstrap=YES)"
                "$CLIENT" --no-defaults --socket="${SOCK[BOOT]}" --user="$user" --connect-timeout=2 \
                    -e "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'" </dev/null ||
                    die "could not bootstrap node$BOOT again"
            fi
            wait_for "$start_timeout" any_synced "${up[@]}" ||
                die "$(printf 'node%s ' "${up[@]}")run but none is Synced in a Primary component; run '$0 stop $dir' first"
        fi
    fi

    for n in "${nodes[@]}"; do
        [ "$n" != "$boot" ] || continue
        if running "$n"; then
            wait_synced "$n"
        else
            launch "$n" join
            wait_synced "$n"
        fi
    done

    for n in "${nodes[@]}"; do
        wait_for "$start_timeout" synced "$n" 3 ||
            die "node$n does not see a cluster of 3 (state: $(wsrep_status "$n" || echo 'not answering'))"
    done
    say "cluster of 3 ready"
    for n in "${nodes[@]}"; do echo "${SOCK[n]}"; done
}

stop_node() {
    local n=$1 pid="" answering=0
    pid="$(live_pid "$n")" || pid=""
    ping_ok "$n" && answering=1
    if [ "$answering" -eq 0 ] && [ -z "$pid" ]; then
        rm -f "${PIDF[n]}" "${SOCK[n]}" "${NDIR[n]}/launched.pid"
        return 0
    fi
    say "node$n: stopping"
    if [ "$answering" -eq 1 ]; then
        timeout "$stop_timeout" "$ADMIN" --no-defaults --socket="${SOCK[n]}" --user="$user" \
            --connect-timeout=2 shutdown </dev/null >/dev/null 2>&1 || true
    fi
    if [ -n "$pid" ]; then
        if ! wait_for "$stop_timeout" not_alive "$pid"; then
            say "node$n: still running after shutdown; sending SIGTERM to $pid"
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for "$stop_timeout" not_alive "$pid"; then
                say "node$n: still running after SIGTERM; sending SIGKILL to $pid"
                kill -KILL "$pid" 2>/dev/null || true
                wait_for 10 not_alive "$pid" || die "node$n's mariadbd (pid $pid) survived SIGKILL"
            fi
        fi
    elif ! wait_for "$stop_timeout" not_answering "$n"; then
        die "the server on ${SOCK[n]} still answers after shutdown and has no pid file to signal"
    fi
    rm -f "${PIDF[n]}" "${SOCK[n]}" "${NDIR[n]}/launched.pid"
    say "node$n: stopped"
}

do_stop() {
    [ -d "$dir" ] || { say "nothing to stop in $dir"; return 0; }
    ADMIN="$(find_tool mariadb-admin mysqladmin)"
    take_lock
    local n any=0
    for n in "${nodes[@]}"; do
        if running "$n"; then any=1; fi
    done
    if [ "$any" -eq 0 ]; then
        say "not running in $dir"
        return 0
    fi
    # Node 1 last: the last node to leave is marked safe_to_bootstrap for the next start.
    for n in 2 3 1; do stop_node "$n"; done
    say "stopped"
}

do_status() {
    tools
    local n pid out st size cstat ready all=0
    for n in "${nodes[@]}"; do
        if ping_ok "$n"; then
            pid="$(live_pid "$n")" || pid="?"
            if out="$(wsrep_status "$n")"; then
                read -r st size cstat ready _ <<<"$out"
                echo "node$n: running (pid $pid), $st, cluster size $size, $cstat, socket ${SOCK[n]}"
                if [ "$st" = Synced ] && [ "$size" = 3 ] && [ "$cstat" = Primary ]; then all=$((all + 1)); fi
            else
                echo "node$n: running (pid $pid), wsrep status unavailable, socket ${SOCK[n]}"
            fi
        elif pid="$(live_pid "$n")"; then
            echo "node$n: starting or unresponsive (pid $pid; state transfer?), socket ${SOCK[n]}"
        else
            echo "node$n: stopped"
        fi
    done
    [ "$all" -eq 3 ]
}

node_number() {
    case "$node_arg" in
        1 | 2 | 3) ;;
        *) echo "usage: $0 $command N [DIR]   (N = 1, 2 or 3)" >&2; exit 2 ;;
    esac
}

do_kill() {
    local n=$node_arg pid others=() m
    tools
    take_lock
    if ! pid="$(live_pid "$n")"; then
        say "node$n is not running"
        return 0
    fi
    say "node$n: SIGKILL to mariadbd (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 not_alive "$pid" || die "node$n's mariadbd (pid $pid) survived SIGKILL"
    # Like a crash: the pid file, socket and grastate.dat stay as they were.
    say "node$n: gone"
    # Wait (a little) until the survivors have noticed, so a status right after is meaningful
    # (a lone survivor of two reports a non-Primary cluster of 1: no quorum).
    for m in "${nodes[@]}"; do
        [ "$m" != "$n" ] || continue
        if ping_ok "$m"; then others+=("$m"); fi
    done
    for m in "${others[@]}"; do
        wait_for 30 cluster_size_is "$m" "${#others[@]}" ||
            say "node$m still reports $(wsrep_status "$m" || echo 'no status') after 30s"
    done
}

do_restart() {
    local n=$node_arg m peers=0
    check_socket_length
    tools
    PROVIDER="$(find_provider)"
    command -v rsync >/dev/null 2>&1 || die "rsync not found; install rsync (Galera's SST uses it)"
    take_lock
    setup_sst_bin
    if running "$n"; then
        say "node$n is already running"
        wait_synced "$n"
        echo "${SOCK[n]}"
        return 0
    fi
    for m in "${nodes[@]}"; do
        [ "$m" != "$n" ] || continue
        if running "$m"; then peers=$((peers + 1)); fi
    done
    [ "$peers" -gt 0 ] || die "no other node is running, so node$n has no cluster to join; use '$0 start' to bootstrap the cluster"
    launch "$n" join
    wait_synced "$n"
    echo "${SOCK[n]}"
}

case "$command" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    kill) node_number; do_kill ;;
    restart) node_number; do_restart ;;
    env)
        printf "export WORKFLOWD_GALERA_DSNS='%s'\n" \
            "$user@unix(${SOCK[1]})/ $user@unix(${SOCK[2]})/ $user@unix(${SOCK[3]})/"
        ;;
    *)
        echo "usage: $0 start|stop|status|env [DIR]  or  $0 kill|restart N [DIR]" >&2
        exit 2
        ;;
esac
