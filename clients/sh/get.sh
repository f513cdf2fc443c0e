#!/usr/bin/env bash
# get.sh FOREIGN_ID | --run-id RUN_ID  [--workflow W]
# Prints the run (the latest run of FOREIGN_ID, or the run RUN_ID).
WF_USAGE='get.sh FOREIGN_ID | --run-id RUN_ID [--workflow W]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wf_parse_run_args "$@"
[ ${#WF_REST[@]} -eq 0 ] || wf_die_usage "unknown option: ${WF_REST[0]}"
wf_call "{\"op\":\"get\",$(wf_ref_json)}"
