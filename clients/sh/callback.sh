#!/usr/bin/env bash
# callback.sh FOREIGN_ID | --run-id RUN_ID  STATUS NEXT [OBJECT_JSON | -] [--workflow W] [--reason TEXT]
#
# Moves a run that waits in the external status STATUS to NEXT, without a task: what a relay of
# a payment provider's webhook does. OBJECT_JSON, when given, replaces the run's object ("-"
# reads it from stdin; it may span lines). Statuses are names or codes. Prints the run. Exit 1
# with CONFLICT on stderr when the run is not waiting in STATUS (say, the webhook came twice).
WF_USAGE='callback.sh FOREIGN_ID | --run-id RUN_ID  STATUS NEXT [OBJECT_JSON | -] [--workflow W] [--reason TEXT]'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=()
reason=''
has_reason=0
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
    --*=*) name=${1%%=*} value=${1#*=}; shift; set -- "$name" "$value" "$@"; continue ;;
    --run-id) [ $# -ge 2 ] || wf_die_usage "--run-id needs a value"; WF_REF_RUN=$2; shift 2 ;;
    --workflow) [ $# -ge 2 ] || wf_die_usage "--workflow needs a value"; WF_REF_WORKFLOW=$2; shift 2 ;;
    --reason) [ $# -ge 2 ] || wf_die_usage "--reason needs a value"; reason=$2; has_reason=1; shift 2 ;;
    --) shift; args+=("$@"); break ;;
    -) args+=("$1"); shift ;;
    -*) wf_die_usage "unknown option: $1" ;;
    *) args+=("$1"); shift ;;
    esac
done
if [ -z "$WF_REF_RUN" ] && [ ${#args[@]} -gt 0 ]; then
    WF_REF_FOREIGN=${args[0]}
    args=("${args[@]:1}")
fi
wf_ref_check
[ ${#args[@]} -ge 2 ] || wf_die_usage "give STATUS (where the run waits) and NEXT (where it goes)"
[ ${#args[@]} -le 3 ] || wf_die_usage "unexpected argument: ${args[3]}"

req="{\"op\":\"callback\",$(wf_ref_json),\"status\":$(wf_value "${args[0]}"),\"next\":$(wf_value "${args[1]}")"
if [ ${#args[@]} -eq 3 ]; then
    object=${args[2]}
    [ "$object" = - ] && object=$(cat)
    object=${object//$'\r'/ }
    object=${object//$'\n'/ }
    [[ $object =~ ^[[:space:]]*\{ ]] || wf_die_usage "the object is not a JSON object"
    req+=",\"object\":$object"
fi
[ "$has_reason" = 1 ] && req+=",\"reason\":$(wf_str "$reason")"
wf_call "$req}"
