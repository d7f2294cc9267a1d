#!/bin/bash
# Train on the CPU: python train.py --device_target CPU.
# Extra --key value flags go to train.py (last wins).
USAGE="CONFIG_PATH [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 1 0 "$@"
need_file CONFIG_PATH "CONFIG_PATH" "${POS[0]}"
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

make_run_dir "train_standalone_cpu"
LAUNCH_ENV=("RANK_ID=0" "RANK_SIZE=1")
launch 0 "$RUN_DIR/train.log" "$PYTHON" train.py --config_path "$CONFIG_PATH" \
    --device_target CPU --run_distribute False \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
