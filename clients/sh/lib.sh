# Shared helpers for the workflowd shell clients. Sourced, never run.
#
# Needs bash and socat; uses jq only for pretty output when it is installed and stdout is a
# terminal (WORKFLOWD_JQ=0 turns that off).
#
# Exit codes of every script:
#   0 ok, 1 the server answered ok:false (the error goes to stderr), 2 usage,
#   3 cannot connect to the socket, 4 await: TIMEOUT, 5 await: UNREACHABLE.

WF_SOCKET="${WORKFLOWD_SOCKET:-.workflowd/workflowd.sock}"
WF_PROG="$(basename "$0")"

wf_die_usage() {
    printf '%s: %s\n' "$WF_PROG" "$1" >&2
    [ -n "${WF_USAGE:-}" ] && printf 'usage: %s\n' "$WF_USAGE" >&2
    exit 2
}

wf_need_socat() {
    command -v socat >/dev/null 2>&1 || { printf '%s: socat is not installed\n' "$WF_PROG" >&2; exit 3; }
}

# wf_str TEXT — TEXT as a JSON string literal (quotes, backslashes and control characters
# escaped). Input is taken as bytes, so UTF-8 passes through unchanged.
wf_str() {
    local LC_ALL=C
    local s=$1 out='' c i
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            if [[ $c == [$'\x01'-$'\x1f'] ]]; then
                out+=$(printf '\\u%04x' "'$c")
            else
                out+=$c
            fi
        done
        s=$out
    fi
    printf '"%s"' "$s"
}

# wf_is_int TEXT / wf_is_number TEXT — JSON integer / JSON number grammar.
wf_is_int() { [[ $1 =~ ^-?(0|[1-9][0-9]*)$ ]]; }
wf_is_number() { [[ $1 =~ ^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$ ]]; }

# wf_status_list NAME_OR_CODE... — a JSON array of status names (strings) or codes (numbers).
wf_value() { if wf_is_int "$1"; then printf '%s' "$1"; else wf_str "$1"; fi; }

# Run reference: every run command takes FOREIGN_ID, or --run-id RUN_ID, and --workflow W.
WF_REF_FOREIGN=''
WF_REF_RUN=''
WF_REF_WORKFLOW=''
# wf_ref_json — the members `"run_id":…` or `"foreign_id":…[,"workflow":…]`.
# Checked by wf_parse_run_args (in the script's own shell, so a usage error exits the script).
wf_ref_check() {
    if [ -n "$WF_REF_RUN" ] && [ -n "$WF_REF_FOREIGN" ]; then
        wf_die_usage "give a foreign id or --run-id, not both"
    fi
    if [ -z "$WF_REF_RUN" ] && [ -z "$WF_REF_FOREIGN" ]; then
        wf_die_usage "missing the run: give a foreign id or --run-id RUN_ID"
    fi
}
wf_ref_json() {
    if [ -n "$WF_REF_RUN" ]; then
        printf '"run_id":%s' "$(wf_str "$WF_REF_RUN")"
    else
        printf '"foreign_id":%s' "$(wf_str "$WF_REF_FOREIGN")"
    fi
    if [ -n "$WF_REF_WORKFLOW" ]; then
        printf ',"workflow":%s' "$(wf_str "$WF_REF_WORKFLOW")"
    fi
}

# wf_error_text LINE — "CODE: message" from an ok:false reply.
wf_error_text() {
    if command -v jq >/dev/null 2>&1; then
        printf '%s\n' "$1" | jq -r '"\(.error.code): \(.error.message)"' 2>/dev/null && return
    fi
    local code message
    code=$(printf '%s\n' "$1" | sed -n 's/.*"error":{"code":"\([A-Z_]*\)".*/\1/p')
    message=$(printf '%s\n' "$1" | sed -n 's/.*"message":"\(\([^"\\]\|\\.\)*\)".*/\1/p')
    printf '%s: %s\n' "${code:-ERROR}" "${message:-$1}"
}

# wf_error_code LINE — the error code of an ok:false reply.
wf_error_code() { printf '%s\n' "$1" | sed -n 's/.*"error":{"code":"\([A-Z_]*\)".*/\1/p'; }

# wf_print LINE — one reply on stdout: raw JSON, pretty with jq on a terminal.
wf_print() {
    if [ -t 1 ] && [ "${WORKFLOWD_JQ:-1}" != 0 ] && command -v jq >/dev/null 2>&1; then
        printf '%s\n' "$1" | jq .
    else
        printf '%s\n' "$1"
    fi
}

# wf_check LINE — exit status for a reply line: 0 for ok:true; otherwise prints the error to
# stderr and returns 1 (4 for TIMEOUT and 5 for UNREACHABLE when WF_AWAIT=1).
# The scripts send no `id`, so every reply starts with {"ok":true or {"ok":false.
wf_check() {
    case "$1" in
    '{"ok":true'*) return 0 ;;
    '{"ok":false'*)
        printf '%s: %s\n' "$WF_PROG" "$(wf_error_text "$1")" >&2
        if [ "${WF_AWAIT:-0}" = 1 ]; then
            case "$(wf_error_code "$1")" in
            TIMEOUT) return 4 ;;
            UNREACHABLE) return 5 ;;
            esac
        fi
        return 1
        ;;
    *)
        printf '%s: unexpected reply: %s\n' "$WF_PROG" "$1" >&2
        return 1
        ;;
    esac
}

# wf_call JSON [WAIT_SECONDS] — sends one request, prints the reply, exits with wf_check's status.
# WAIT_SECONDS is how long socat waits for the reply after sending (await needs its timeout).
wf_call() {
    local request=$1 wait=${2:-30} reply rc errfile
    wf_need_socat
    if [ ! -S "$WF_SOCKET" ]; then
        printf '%s: cannot connect: no socket at %s (set WORKFLOWD_SOCKET)\n' "$WF_PROG" "$WF_SOCKET" >&2
        exit 3
    fi
    errfile=$(mktemp)
    reply=$(printf '%s\n' "$request" | socat -t "$wait" - "UNIX-CONNECT:$WF_SOCKET" 2>"$errfile")
    rc=$?
    if [ $rc -ne 0 ] && [ -z "$reply" ]; then
        printf '%s: cannot connect to %s: %s\n' "$WF_PROG" "$WF_SOCKET" "$(tail -n1 "$errfile")" >&2
        rm -f "$errfile"
        exit 3
    fi
    rm -f "$errfile"
    if [ -z "$reply" ]; then
        printf '%s: the server closed the connection without a reply\n' "$WF_PROG" >&2
        exit 1
    fi
    wf_print "$reply"
    wf_check "$reply"
    exit $?
}

# wf_parse_run_args ARGS... — FOREIGN_ID | --run-id RUN_ID, --workflow W, --reason TEXT (when
# WF_TAKES_REASON=1), -h/--help. Sets WF_REF_* and WF_REASON; leaves other options in WF_REST.
WF_REASON=''
WF_HAS_REASON=0
WF_REST=()
wf_parse_run_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        -h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
        --run-id) [ $# -ge 2 ] || wf_die_usage "--run-id needs a value"; WF_REF_RUN=$2; shift 2 ;;
        --workflow) [ $# -ge 2 ] || wf_die_usage "--workflow needs a value"; WF_REF_WORKFLOW=$2; shift 2 ;;
        --reason)
            [ "${WF_TAKES_REASON:-0}" = 1 ] || wf_die_usage "unknown option --reason"
            [ $# -ge 2 ] || wf_die_usage "--reason needs a value"
            WF_REASON=$2; WF_HAS_REASON=1; shift 2 ;;
        --) shift; break ;;
        --*=*) local name=${1%%=*} value=${1#*=}; shift; set -- "$name" "$value" "$@" ;;
        -*) WF_REST+=("$1"); shift
            if [ $# -gt 0 ] && [[ $1 != -* ]]; then WF_REST+=("$1"); shift; fi ;;
        *)
            [ -z "$WF_REF_FOREIGN" ] || wf_die_usage "unexpected argument: $1"
            WF_REF_FOREIGN=$1; shift ;;
        esac
    done
    if [ $# -gt 0 ]; then
        [ -z "$WF_REF_FOREIGN" ] && [ $# -eq 1 ] || wf_die_usage "unexpected argument: $*"
        WF_REF_FOREIGN=$1
    fi
    wf_ref_check
}
