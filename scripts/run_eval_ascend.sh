#!/bin/bash
# Evaluate a checkpoint on one Ascend device: python eval.py --device_target Ascend --device_id DEVICE_ID.
# DEVICE_ID defaults to $DEVICE_ID or 0. Extra --key value flags go to eval.py (last wins).
USAGE="CONFIG_PATH CHECKPOINT_PATH [DEVICE_ID] [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 2 1 "$@"
need_file CONFIG_PATH "CONFIG_PATH" "${POS[0]}"
need_path CHECKPOINT_PATH "CHECKPOINT_PATH" "${POS[1]}"
DEVICE_ID="${POS[2]:-${DEVICE_ID:-0}}"
need_int DEVICE_ID
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

make_run_dir "eval_ascend"
LAUNCH_ENV=("RANK_ID=0" "DEVICE_ID=$DEVICE_ID" "RANK_SIZE=1")
launch 0 "$RUN_DIR/eval.log" "$PYTHON" eval.py --config_path "$CONFIG_PATH" \
    --checkpoint_path "$CHECKPOINT_PATH" --device_target Ascend --device_id "$DEVICE_ID" \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
