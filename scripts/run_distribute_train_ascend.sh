#!/bin/bash
# Distributed training on the Ascend devices of this server, one process per device.
# The devices come from the rank table (python -m src.model_utils.rank_table); DEVICE_NUM must be
# the number of devices the table gives this server. Each process gets RANK_TABLE_FILE,
# RANK_SIZE (ranks in the whole table), RANK_ID (its rank in the table) and DEVICE_ID, and logs to
# <run>/rank_<RANK_ID>/log_rank<RANK_ID>.log. With several servers in the table, the server is
# $SERVER_ID if set, else the one whose server_id is an address of this host, else the first.
USAGE="RANK_TABLE_FILE DEVICE_NUM CONFIG_PATH [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 3 0 "$@"
need_file RANK_TABLE_FILE "RANK_TABLE_FILE" "${POS[0]}"
DEVICE_NUM="${POS[1]}"
need_int DEVICE_NUM 1
need_file CONFIG_PATH "CONFIG_PATH" "${POS[2]}"
need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

# rank_table ARGS...: run the rank table reader from the repo root; exit 1 with its message.
rank_table() {
    local out err_file err
    err_file="$(mktemp)"
    if ! out="$(cd "$REPO_ROOT" && "$PYTHON" -m src.model_utils.rank_table "$RANK_TABLE_FILE" \
            ${SERVER_ID:+--server "$SERVER_ID"} "$@" 2>"$err_file")"; then
        err="$(cat "$err_file")"
        rm -f "$err_file"
        die "cannot use rank table: ${err#error: }"
    fi
    rm -f "$err_file"
    echo "$out"
}

TABLE_OUT="$(rank_table)"
read -r -a TABLE_DEVICES <<<"$TABLE_OUT"
TABLE_OUT="$(rank_table --ranks)"
read -r -a TABLE_RANKS <<<"$TABLE_OUT"
WORLD_SIZE="$(rank_table --world-size)"

if [[ ${#TABLE_DEVICES[@]} -ne $DEVICE_NUM ]]; then
    usage_error "DEVICE_NUM is $DEVICE_NUM but the rank table $RANK_TABLE_FILE gives this server" \
        "${#TABLE_DEVICES[@]} device(s) (device ids: ${TABLE_DEVICES[*]})"
fi
if [[ ${#TABLE_RANKS[@]} -ne ${#TABLE_DEVICES[@]} ]]; then
    die "rank table reader returned ${#TABLE_DEVICES[@]} device(s) but ${#TABLE_RANKS[@]} rank(s)"
fi
if [[ $WORLD_SIZE -ne ${#TABLE_DEVICES[@]} ]]; then
    info "the rank table has $WORLD_SIZE ranks; this server runs ranks ${TABLE_RANKS[*]}" \
        "(start this script on the other servers too)"
fi

make_run_dir "train_distribute_ascend"
for i in "${!TABLE_DEVICES[@]}"; do
    rank="${TABLE_RANKS[$i]}"
    device="${TABLE_DEVICES[$i]}"
    rank_dir="$RUN_DIR/rank_$rank"
    mkdir -p "$rank_dir"
    LAUNCH_ENV=("RANK_ID=$rank" "DEVICE_ID=$device" "RANK_SIZE=$WORLD_SIZE" "RANK_TABLE_FILE=$RANK_TABLE_FILE")
    launch "$rank" "$rank_dir/log_rank$rank.log" "$PYTHON" train.py --config_path "$CONFIG_PATH" \
        --run_distribute True --device_target Ascend --device_id "$device" \
        --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
done
finish_launch
