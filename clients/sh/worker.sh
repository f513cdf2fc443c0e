#!/usr/bin/env bash
# worker.sh STATUS [--workflow W] [--max-in-flight N] [--lease-ms N] [--count N] -- COMMAND [ARG]...
#
# A worker of the external status STATUS (workflowd runs with it in --external-steps): for each
# task workflowd offers, runs COMMAND once, with the task's object (the order, one JSON line) on
# stdin and the task in the environment:
#   WF_TASK (the task id), WF_RUN_ID, WF_FOREIGN_ID, WF_STATUS, WF_VERSION, WF_ATTEMPT,
#   WF_IDEMPOTENCY_KEY (the same for every offer of this step of this run), WF_DEADLINE.
# COMMAND answers on stdout: the first line is the next status (name or code), optionally
# followed by a space and a reason; the lines after it, if any, are the new object (a JSON
# object, it may span lines; nothing keeps the object as it is). Exit status 0 completes the task
# so. Any other exit status fails it (workflowd offers it again after a back-off, and pauses the
# run at the retry limit), with the last line COMMAND wrote to stderr as the error, or
# "COMMAND exited with N".
#
# Tasks are run one at a time, in the order they arrive; --max-in-flight lets that many wait
# here. Each reply is printed on stdout (one JSON line per task), and a line per task on stderr
# (WF_QUIET=1 leaves those out). --count N: exit 0 after N tasks. SIGTERM or SIGINT: the task in
# hand is finished and answered, the worker unworks (what it held is offered again at once), and
# it exits 0. It does not reconnect: when the server closes the connection it exits 1, and
# workflowd offers the unanswered tasks again (so make COMMAND safe to repeat, by
# WF_IDEMPOTENCY_KEY). Frames are taken apart with bash alone (an order of 140 KB takes 0.2 s).
WF_USAGE='worker.sh STATUS [--workflow W] [--max-in-flight N] [--lease-ms N] [--count N] -- COMMAND [ARG]...'
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

status=''
work_args=''
count=''
cmd=()
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) printf 'usage: %s\n' "$WF_USAGE"; exit 0 ;;
    --) shift; cmd=("$@"); break ;;
    --*=*) name=${1%%=*} value=${1#*=}; shift; set -- "$name" "$value" "$@"; continue ;;
    --workflow) [ $# -ge 2 ] || wf_die_usage "--workflow needs a value"; work_args+=",\"workflow\":$(wf_str "$2")"; shift 2 ;;
    --max-in-flight | --lease-ms)
        [ $# -ge 2 ] && wf_is_int "$2" || wf_die_usage "$1 needs a number"
        work_args+=",\"$(printf '%s' "${1#--}" | tr - _)\":$2"; shift 2 ;;
    --count) [ $# -ge 2 ] && wf_is_int "$2" && [ "$2" -gt 0 ] || wf_die_usage "--count takes a positive number"; count=$2; shift 2 ;;
    -*) wf_die_usage "unknown option: $1" ;;
    *) [ -z "$status" ] || wf_die_usage "unexpected argument: $1 (put COMMAND after --)"; status=$1; shift ;;
    esac
done
[ -n "$status" ] || wf_die_usage "give the external STATUS to work on"
[ ${#cmd[@]} -gt 0 ] || wf_die_usage "give the COMMAND to run for each task, after --"

wf_need_socat
if [ ! -S "$WF_SOCKET" ]; then
    printf '%s: cannot connect: no socket at %s (set WORKFLOWD_SOCKET)\n' "$WF_PROG" "$WF_SOCKET" >&2
    exit 3
fi

say() { [ "${WF_QUIET:-0}" = 1 ] || printf '%s: %s\n' "$WF_PROG" "$*" >&2; }

# wf_unescape TEXT — the text of a JSON string's contents: \" \\ \/ undone (other escapes kept).
wf_unescape() {
    local s=${1//\\\\/$'\x01'}
    s=${s//\\\"/\"}
    s=${s//\\\//\/}
    printf '%s' "${s//$'\x01'/\\}"
}

# socat as a coprocess: our end of its stdin stays open while we work.
coproc WF_CONN { exec socat - "UNIX-CONNECT:$WF_SOCKET" 2>/dev/null; }
conn_pid=$WF_CONN_PID
conn_in=${WF_CONN[0]}
conn_out=${WF_CONN[1]}
stop=0
idle=0
lost=0
worker=''
errfile=$(mktemp)
# A signal while waiting for a task ends the worker at once; while a task is in hand (bash runs
# the trap after the command), only after its answer.
trap 'if [ "$idle" = 1 ]; then finish 0; fi; stop=1' INT TERM
trap 'lost=1' PIPE

# finish CODE — unworks (when the connection still stands), closes it and exits.
finish() {
    local line
    trap '' PIPE
    if [ -n "$worker" ] && [ "$lost" = 0 ] && printf '{"op":"unwork","worker":%s}\n' "$worker" >&"$conn_out" 2>/dev/null; then
        while IFS= read -r -t 5 line <&"$conn_in"; do
            case "$line" in '{"ok":'*) break ;; esac
        done
    fi
    kill "$conn_pid" 2>/dev/null
    wait "$conn_pid" 2>/dev/null
    rm -f "$errfile"
    exit "$1"
}

# send JSON — writes one request; on failure the connection is gone.
send() {
    printf '%s\n' "$1" >&"$conn_out" 2>/dev/null && [ "$lost" = 0 ] && return 0
    printf '%s: the connection to %s is lost\n' "$WF_PROG" "$WF_SOCKET" >&2
    worker=''
    finish 1
}

# reply — the next reply line in $reply; task frames that come first wait in `queue`.
queue=()
reply() {
    local line
    while :; do
        if ! IFS= read -r line <&"$conn_in"; then
            [ "$stop" = 1 ] && continue  # a signal interrupted the read: the reply is still due
            printf '%s: the server closed the connection\n' "$WF_PROG" >&2
            worker=''
            finish 1
        fi
        case "$line" in
        '{"worker":'*) queue+=("$line") ;;
        '{"ok":'*) reply=$line; return 0 ;;
        *) ;;
        esac
    done
}

send "{\"op\":\"work\",\"status\":$(wf_value "$status")$work_args}"
reply
if ! wf_check "$reply"; then finish 1; fi
worker=${reply#*\"worker\":}
worker=${worker%%[,\}]*}
say "working on $status (worker $worker)"

# handle FRAME — runs the command for one task frame and answers the task.
handle() {
    local frame=$1 task run_id foreign_id tstatus version attempt key deadline object out rc first rest next reason answer err
    task=${frame#*\"task\":\{\"task\":\"}; task=${task%%\"*}
    run_id=${frame#*,\"run_id\":\"}; run_id=${run_id%%\"*}
    foreign_id=${frame#*,\"foreign_id\":\"}; foreign_id=${foreign_id%%\",\"status\":\"*}
    tstatus=${frame#*,\"foreign_id\":\"*\",\"status\":\"}; tstatus=${tstatus%%\"*}
    version=${frame#*,\"version\":}; version=${version%%[,\}]*}
    attempt=${frame#*,\"attempt\":}; attempt=${attempt%%[,\}]*}
    object=${frame#*,\"attempt\":*,\"object\":}; object=${object%,\"idempotency_key\":\"*}
    key=${frame##*,\"idempotency_key\":\"}; key=${key%%\"*}
    deadline=${frame##*,\"deadline\":\"}; deadline=${deadline%%\"*}
    foreign_id=$(wf_unescape "$foreign_id")

    out=$(printf '%s\n' "$object" | WF_TASK=$task WF_RUN_ID=$run_id WF_FOREIGN_ID=$foreign_id WF_STATUS=$tstatus \
        WF_VERSION=$version WF_ATTEMPT=$attempt WF_IDEMPOTENCY_KEY=$key WF_DEADLINE=$deadline \
        "${cmd[@]}" 2>"$errfile")
    rc=$?
    if [ "$stop" = 1 ] && [ $rc -gt 128 ]; then
        return 1  # the command was interrupted with us: no answer; the task is offered again
    fi
    first=${out%%$'\n'*}
    rest=''
    [[ $out == *$'\n'* ]] && rest=${out#*$'\n'}
    rest=${rest//$'\r'/ }
    rest=${rest//$'\n'/ }
    next=${first%% *}
    reason=''
    [[ $first == *' '* ]] && reason=${first#* }
    err=''
    if [ $rc -ne 0 ]; then
        err=$(sed '/^[[:space:]]*$/d' "$errfile" | tail -n 1)
        [ -n "$err" ] || err="${cmd[0]} exited with $rc"
    elif [ -z "$next" ]; then
        err="${cmd[0]} printed no next status"
    elif [[ $rest =~ [^[:space:]] ]] && ! [[ $rest =~ ^[[:space:]]*\{ ]]; then
        err="${cmd[0]} printed an object that is not a JSON object"
    fi
    if [ -n "$err" ]; then
        answer="{\"op\":\"fail\",\"task\":$(wf_str "$task"),\"error\":$(wf_str "$err")}"
        say "$foreign_id $tstatus attempt $attempt -> fail: $err"
    else
        answer="{\"op\":\"complete\",\"task\":$(wf_str "$task"),\"status\":$(wf_value "$next")"
        [[ $rest =~ [^[:space:]] ]] && answer+=",\"object\":$rest"
        [ -n "$reason" ] && answer+=",\"reason\":$(wf_str "$reason")"
        answer+='}'
        say "$foreign_id $tstatus attempt $attempt -> $next${reason:+ ($reason)}"
    fi
    send "$answer"
    reply
    printf '%s\n' "$reply"
    wf_check "$reply" && return 0
    case "$reply" in
    '{"ok":false,"error":{"code":"BAD_REQUEST"'*)
        # The server refused the answer (a status the step may not go to, not the run's
        # object): that is a failure of the step, so the task is retried, and paused in the end.
        err="complete refused: $(wf_error_text "$reply")"
        send "{\"op\":\"fail\",\"task\":$(wf_str "$task"),\"error\":$(wf_str "$err")}"
        reply
        printf '%s\n' "$reply"
        wf_check "$reply" || true
        ;;
    esac
    return 0  # CONFLICT and the like: said on stderr; on to the next task
}

handled=0
while :; do
    if [ ${#queue[@]} -gt 0 ]; then
        frame=${queue[0]}
        queue=("${queue[@]:1}")
    else
        [ "$stop" = 1 ] && finish 0
        idle=1
        if ! IFS= read -r frame <&"$conn_in"; then
            idle=0
            [ "$stop" = 1 ] && finish 0
            printf '%s: the server closed the connection\n' "$WF_PROG" >&2
            worker=''
            finish 1
        fi
        idle=0
    fi
    case "$frame" in
    '{"worker":'*)
        handle "$frame" || finish 0
        handled=$((handled + 1))
        if [ -n "$count" ] && [ "$handled" -ge "$count" ]; then finish 0; fi
        ;;
    '{"ok":false'*) wf_check "$frame"; worker=''; finish 1 ;;  # the server ends the connection
    *) ;;
    esac
    [ "$stop" = 1 ] && finish 0
done
