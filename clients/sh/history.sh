#!/usr/bin/env bash
# history.sh FOREIGN_ID | --run-id RUN_ID  [--workflow W]
# Prints the run's events in seq order.
WF_USAGE='history.sh FOREIGN_ID | --run-id RUN_ID [--workflow W]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wf_parse_run_args "$@"
[ ${#WF_REST[@]} -eq 0 ] || wf_die_usage "unknown option: ${WF_REST[0]}"
wf_call "{\"op\":\"history\",$(wf_ref_json)}"
