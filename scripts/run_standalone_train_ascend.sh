#!/bin/bash
# Train on one Ascend device: python train.py --device_target Ascend --device_id DEVICE_ID.
# DEVICE_ID defaults to $DEVICE_ID or 0. Extra --key value flags go to train.py (last wins).
USAGE="CONFIG_PATH [DEVICE_ID] [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 1 1 "$@"
need_file CONFIG_PATH "CONFIG_PATH" "${POS[0]}"
DEVICE_ID="${POS[1]:-${DEVICE_ID:-0}}"
need_int DEVICE_ID
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

make_run_dir "train_standalone_ascend"
LAUNCH_ENV=("RANK_ID=0" "DEVICE_ID=$DEVICE_ID" "RANK_SIZE=1")
launch 0 "$RUN_DIR/train.log" "$PYTHON" train.py --config_path "$CONFIG_PATH" \
    --device_target Ascend --device_id "$DEVICE_ID" --run_distribute False \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
