#!/usr/bin/env bash
# cancel.sh FOREIGN_ID | --run-id RUN_ID  [--workflow W] [--reason TEXT]
# Cancels a run; prints the run as the server returns it.
WF_USAGE='cancel.sh FOREIGN_ID | --run-id RUN_ID [--workflow W] [--reason TEXT]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WF_TAKES_REASON=1
wf_parse_run_args "$@"
[ ${#WF_REST[@]} -eq 0 ] || wf_die_usage "unknown option: ${WF_REST[0]}"
req="{\"op\":\"cancel\",$(wf_ref_json)"
[ "$WF_HAS_REASON" = 1 ] && req+=",\"reason\":$(wf_str "$WF_REASON")"
wf_call "$req}"
