#!/usr/bin/env bash
# stats.sh — counts by status and run state, outbox backlog, event head, consumers' lag.
WF_USAGE='stats.sh'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in
-h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
'') ;;
*) wf_die_usage "unexpected argument: $1" ;;
esac
wf_call '{"op":"stats"}'
