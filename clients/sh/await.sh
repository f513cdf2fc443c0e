#!/usr/bin/env bash
# await.sh FOREIGN_ID | --run-id RUN_ID  [--workflow W] [--status S]... [--timeout-ms N]
# Waits until the run is at, or has passed through, one of the statuses (default: any terminal
# status) and prints the run. Exit 4 on TIMEOUT, 5 on UNREACHABLE (the error, with the run as it
# is, goes to stderr).
WF_USAGE='await.sh FOREIGN_ID | --run-id RUN_ID [--workflow W] [--status S]... [--timeout-ms N]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wf_parse_run_args "$@"
statuses=()
timeout_ms=30000
set -- "${WF_REST[@]}"
while [ $# -gt 0 ]; do
    case "$1" in
    --status) [ $# -ge 2 ] || wf_die_usage "--status needs a value"; statuses+=("$(wf_value "$2")"); shift 2 ;;
    --timeout-ms)
        [ $# -ge 2 ] && wf_is_int "$2" && [ "$2" -ge 0 ] || wf_die_usage "--timeout-ms needs a number of milliseconds"
        timeout_ms=$2; shift 2 ;;
    *) wf_die_usage "unknown option: $1" ;;
    esac
done
req="{\"op\":\"await\",$(wf_ref_json),\"timeout_ms\":$timeout_ms"
if [ ${#statuses[@]} -gt 0 ]; then
    req+=",\"status\":[$(IFS=,; printf '%s' "${statuses[*]}")]"
fi
WF_AWAIT=1
wf_call "$req}" $((timeout_ms / 1000 + 10))
