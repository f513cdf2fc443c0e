#!/usr/bin/env bash
# watch.sh [--from now|earliest|SEQ] [--workflow W] [--foreign-id ID] [--run-id ID]
#          [--status S]... [--run-state S]... [--count N]
#
# Subscribes and prints each matching event as one JSON line, in seq order, until interrupted
# (Ctrl-C ends it with exit 0) or N events have been printed. To resume after an interruption,
# pass the last printed "seq" as --from: events with a greater seq follow. Once subscribed it
# says so on stderr ("subscribed; head is seq N"; WF_QUIET=1 leaves that out). Exit 1 if the
# server refuses the subscription or closes the connection.
WF_USAGE='watch.sh [--from now|earliest|SEQ] [--workflow W] [--foreign-id ID] [--run-id ID] [--status S]... [--run-state S]... [--count N]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

from='"now"'
filters=''
statuses=()
run_states=()
count=''
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
    --*=*) name=${1%%=*} value=${1#*=}; shift; set -- "$name" "$value" "$@"; continue ;;
    esac
    [ $# -ge 2 ] || wf_die_usage "${1} needs a value (or unknown argument)"
    case "$1" in
    --from)
        case "$2" in
        now | earliest) from="\"$2\"" ;;
        *) wf_is_int "$2" && [ "$2" -ge 0 ] || wf_die_usage "--from takes now, earliest or a seq"; from=$2 ;;
        esac ;;
    --workflow) filters+=",\"workflow\":$(wf_str "$2")" ;;
    --foreign-id) filters+=",\"foreign_id\":$(wf_str "$2")" ;;
    --run-id) filters+=",\"run_id\":$(wf_str "$2")" ;;
    --status) statuses+=("$(wf_value "$2")") ;;
    --run-state) run_states+=("$(wf_value "$2")") ;;
    --count) wf_is_int "$2" && [ "$2" -gt 0 ] || wf_die_usage "--count takes a positive number"; count=$2 ;;
    *) wf_die_usage "unknown option: $1" ;;
    esac
    shift 2
done
[ ${#statuses[@]} -gt 0 ] && filters+=",\"status\":[$(IFS=,; printf '%s' "${statuses[*]}")]"
[ ${#run_states[@]} -gt 0 ] && filters+=",\"run_state\":[$(IFS=,; printf '%s' "${run_states[*]}")]"

wf_need_socat
if [ ! -S "$WF_SOCKET" ]; then
    printf '%s: cannot connect: no socket at %s (set WORKFLOWD_SOCKET)\n' "$WF_PROG" "$WF_SOCKET" >&2
    exit 3
fi

# socat runs as a coprocess: our end of its stdin stays open, so the subscription streams until
# we stop it.
coproc WF_CONN { exec socat - "UNIX-CONNECT:$WF_SOCKET" 2>/dev/null; }
conn_pid=$WF_CONN_PID
conn_in=${WF_CONN[0]}
conn_out=${WF_CONN[1]}
finish() {
    kill "$conn_pid" 2>/dev/null
    wait "$conn_pid" 2>/dev/null
    exit "$1"
}
trap 'finish 0' INT TERM
trap 'finish 0' PIPE

printf '%s\n' "{\"op\":\"subscribe\",\"from\":$from$filters}" >&"$conn_out"
if ! IFS= read -r reply <&"$conn_in"; then
    printf '%s: cannot connect to %s\n' "$WF_PROG" "$WF_SOCKET" >&2
    finish 3
fi
wf_check "$reply" || finish 1
head=$(printf '%s' "$reply" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')
[ "${WF_QUIET:-0}" = 1 ] || printf '%s: subscribed; head is seq %s\n' "$WF_PROG" "$head" >&2

printed=0
while IFS= read -r line <&"$conn_in"; do
    case "$line" in
    '{"sub":'*)
        event=${line#*,\"event\":}
        printf '%s\n' "${event%\}}" || finish 0
        printed=$((printed + 1))
        if [ -n "$count" ] && [ "$printed" -ge "$count" ]; then finish 0; fi
        ;;
    '{"ok":false'*) wf_check "$line"; finish 1 ;;
    *) ;;
    esac
done
printf '%s: the server closed the connection\n' "$WF_PROG" >&2
finish 1
