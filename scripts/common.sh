# shellcheck shell=bash
# Shared logic of the launch scripts in scripts/: argument checks, absolute paths, run folders,
# launching (or, with DRY_RUN=1, printing) the processes. Source it; do not run it.
#
# A script sets USAGE (its arguments, without the script name) and then sources this file:
#
#   USAGE="CONFIG_PATH [DEVICE_ID] [--key value ...]"
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Environment understood by every script:
#   DRY_RUN=1      print one line per process instead of starting it, then exit 0
#   RUN_DIR=DIR    use DIR as the run folder instead of <repo>/runs/<kind>_<timestamp>
#   RUN_NAME=NAME  name the run folder <repo>/runs/<kind>_NAME instead of using a timestamp
#   WAIT=1         wait for the started processes and exit with failure if one fails
#   PYTHON=EXE     python interpreter to run (default: python)

set -euo pipefail

COMMON_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$COMMON_DIR/.." && pwd -P)"
SCRIPT_NAME="$(basename "${BASH_SOURCE[1]:-$0}")"
PYTHON="${PYTHON:-python}"
USAGE="${USAGE:-}"

POS=()      # positional arguments, filled by split_args
EXTRA=()    # trailing --key value flags, filled by split_args
PIDS=()     # processes started by launch
LOGS=()     # their log files

usage_line() {
    echo "Usage: bash scripts/$SCRIPT_NAME $USAGE"
}

# die MESSAGE: print an error and exit 1.
die() {
    echo "[ERROR] $SCRIPT_NAME: $*" >&2
    exit 1
}

# usage_error MESSAGE: print an error and the usage line, exit 1.
usage_error() {
    echo "[ERROR] $SCRIPT_NAME: $*" >&2
    usage_line >&2
    exit 1
}

info() {
    echo "[INFO] $*"
}

is_dry_run() {
    [[ "${DRY_RUN:-0}" == "1" ]]
}

# split_args N_REQUIRED N_OPTIONAL "$@"
# Fills POS with the N_REQUIRED arguments and up to N_OPTIONAL more positional arguments (taken
# while they do not start with '-'), and EXTRA with the rest, which must be '--key value' or
# '--key=value' flags. Prints usage and exits 1 on -h/--help, too few arguments or a stray one.
split_args() {
    local n_req="$1" n_opt="$2"
    shift 2
    if [[ $# -gt 0 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
        usage_line
        exit 0
    fi
    if [[ $# -lt $n_req ]]; then
        usage_error "expected at least $n_req argument(s), got $#"
    fi
    POS=("${@:1:$n_req}")
    shift "$n_req"
    local taken=0
    while [[ $# -gt 0 && $taken -lt $n_opt && "$1" != -* ]]; do
        POS+=("$1")
        shift
        taken=$((taken + 1))
    done
    EXTRA=("$@")
    local i=0 arg
    while [[ $i -lt ${#EXTRA[@]} ]]; do
        arg="${EXTRA[$i]}"
        if [[ "$arg" != --?* ]]; then
            usage_error "unexpected argument '$arg' (extra flags are passed on as --key value)"
        fi
        if [[ "$arg" == *=* ]]; then
            i=$((i + 1))
        elif [[ $((i + 1)) -lt ${#EXTRA[@]} ]]; then
            i=$((i + 2))
        else
            usage_error "flag $arg needs a value (extra flags are passed on as --key value)"
        fi
    done
}

# abs_path PATH: print PATH made absolute (not required to exist).
abs_path() {
    local p="$1"
    [[ "$p" == "~"/* ]] && p="$HOME/${p#\~/}"
    [[ "$p" != /* ]] && p="$PWD/$p"
    if [[ -d "$p" ]]; then
        (cd "$p" && pwd -P)
    elif [[ -d "$(dirname "$p")" ]]; then
        echo "$(cd "$(dirname "$p")" && pwd -P)/$(basename "$p")"
    else
        echo "$p"
    fi
}

# need_file VAR LABEL PATH: check PATH is an existing file; set VAR to its absolute path.
need_file() {
    local var="$1" label="$2" path="$3"
    [[ -n "$path" ]] || usage_error "$label is empty"
    [[ -f "$path" ]] || usage_error "$label '$path' is not an existing file"
    printf -v "$var" '%s' "$(abs_path "$path")"
}

# need_path VAR LABEL PATH: like need_file, but a directory is fine too.
need_path() {
    local var="$1" label="$2" path="$3"
    [[ -n "$path" ]] || usage_error "$label is empty"
    [[ -e "$path" ]] || usage_error "$label '$path' does not exist"
    printf -v "$var" '%s' "$(abs_path "$path")"
}

# need_int NAME [MIN]: check the variable NAME holds a decimal integer >= MIN (default 0);
# rewrite it without leading zeros.
need_int() {
    local name="$1" min="${2:-0}" value
    value="${!name-}"
    [[ "$value" =~ ^[0-9]{1,9}$ ]] || usage_error "$name must be an integer >= $min, got '$value'"
    [[ $((10#$value)) -ge $min ]] || usage_error "$name must be an integer >= $min, got '$value'"
    printf -v "$name" '%d' "$((10#$value))"
}

# need_cmd LABEL EXE HINT: check EXE can be run. Only a warning in a dry run.
need_cmd() {
    local label="$1" exe="$2" hint="$3"
    if ! command -v "$exe" >/dev/null 2>&1; then
        if is_dry_run; then
            echo "[WARNING] $SCRIPT_NAME: $label '$exe' not found ($hint); continuing because DRY_RUN=1" >&2
        else
            die "$label '$exe' not found: $hint"
        fi
    fi
}

# make_run_dir KIND: create the run folder and set RUN_DIR to its absolute path.
# RUN_DIR from the environment wins; else <repo>/runs/KIND_<RUN_NAME or timestamp>.
make_run_dir() {
    local kind="$1"
    if [[ -n "${RUN_DIR:-}" ]]; then
        RUN_DIR="$(abs_path "$RUN_DIR")"
    elif [[ -n "${RUN_NAME:-}" ]]; then
        RUN_DIR="$REPO_ROOT/runs/${kind}_${RUN_NAME}"
    else
        local base n=1
        base="$REPO_ROOT/runs/${kind}_$(date +%Y%m%d_%H%M%S)"
        RUN_DIR="$base"
        while [[ -e "$RUN_DIR" ]]; do
            n=$((n + 1))
            RUN_DIR="${base}_$n"
        done
    fi
    mkdir -p "$RUN_DIR" || die "cannot create run folder '$RUN_DIR'"
    info "run folder: $RUN_DIR"
}

# quote_words WORD...: the words shell-quoted, joined by spaces.
quote_words() {
    local out="" word
    for word in "$@"; do
        out+="$(printf '%q' "$word") "
    done
    echo "${out% }"
}

# dry_line RANK CMD...: the DRY_RUN line for a process with LAUNCH_ENV set.
dry_line() {
    local rank="$1"
    shift
    echo "RANK $rank ENV $(quote_words ${LAUNCH_ENV[@]+"${LAUNCH_ENV[@]}"}) CMD $(quote_words "$@")"
}

# launch RANK LOG CMD...: start CMD in the background from the repo root with the variables in
# the array LAUNCH_ENV (NAME=value words) added to its environment, stdout and stderr to LOG.
# With DRY_RUN=1 only print the RANK line.
LAUNCH_ENV=()
launch() {
    local rank="$1" log="$2"
    shift 2
    if is_dry_run; then
        dry_line "$rank" "$@"
        return 0
    fi
    mkdir -p "$(dirname "$log")"
    (cd "$REPO_ROOT" && exec env ${LAUNCH_ENV[@]+"${LAUNCH_ENV[@]}"} nohup "$@" </dev/null >"$log" 2>&1) &
    PIDS+=("$!")
    LOGS+=("$log")
    info "rank $rank started (pid $!), log: $log"
}

# run_step LOG CMD...: run CMD in the foreground from the repo root (env from LAUNCH_ENV),
# output to LOG; if it fails, show the end of LOG and exit with CMD's status (2: a user error,
# whose one-line message ends the log). With DRY_RUN=1 only print the RANK 0 line.
run_step() {
    local log="$1" status=0
    shift
    if is_dry_run; then
        dry_line 0 "$@"
        return 0
    fi
    info "running: $(quote_words "$@")"
    info "log: $log"
    (cd "$REPO_ROOT" && exec env ${LAUNCH_ENV[@]+"${LAUNCH_ENV[@]}"} "$@" </dev/null >"$log" 2>&1) || status=$?
    if [[ $status -ne 0 ]]; then
        tail -n 20 "$log" >&2 || true
        echo "[ERROR] $SCRIPT_NAME: '$1' failed (exit status $status); see $log" >&2
        exit "$status"
    fi
}

# finish_launch: after the launches. DRY_RUN: exit 0. WAIT=1: wait for every process; if one
# failed, show the last line of its log and exit with the first failed process's status.
# Otherwise leave them running and say where the logs are.
finish_launch() {
    if is_dry_run; then
        exit 0
    fi
    if [[ "${WAIT:-0}" == "1" ]]; then
        local i status first_failure=0
        for i in "${!PIDS[@]}"; do
            status=0
            wait "${PIDS[$i]}" || status=$?
            if [[ $status -ne 0 ]]; then
                echo "[ERROR] $SCRIPT_NAME: process ${PIDS[$i]} failed (exit status $status): $(tail -n 1 "${LOGS[$i]}"); see ${LOGS[$i]}" >&2
                [[ $first_failure -ne 0 ]] || first_failure=$status
            fi
        done
        [[ $first_failure -eq 0 ]] || exit "$first_failure"
        info "all processes finished; logs in $RUN_DIR"
    else
        info "running in the background; follow with: tail -f ${LOGS[0]}"
    fi
}
