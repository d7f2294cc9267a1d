#!/bin/bash
# Evaluate a checkpoint on the CPU: python eval.py --device_target CPU.
# Extra --key value flags go to eval.py (last wins).
USAGE="CONFIG_PATH CHECKPOINT_PATH [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 2 0 "$@"
need_file CONFIG_PATH "CONFIG_PATH" "${POS[0]}"
need_path CHECKPOINT_PATH "CHECKPOINT_PATH" "${POS[1]}"
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

make_run_dir "eval_cpu"
LAUNCH_ENV=("RANK_ID=0" "RANK_SIZE=1")
launch 0 "$RUN_DIR/eval.log" "$PYTHON" eval.py --config_path "$CONFIG_PATH" \
    --checkpoint_path "$CHECKPOINT_PATH" --device_target CPU \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
