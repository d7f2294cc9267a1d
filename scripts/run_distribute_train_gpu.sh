#!/bin/bash
# Distributed training on DEVICE_NUM GPUs of this machine through OpenMPI:
#   mpirun -n DEVICE_NUM ... python train.py --run_distribute True --device_target GPU
# mpirun's own output goes to <run>/train.log, each rank's to <run>/log_output/.
# Set MPIRUN to use another mpirun executable.
USAGE="DEVICE_NUM CONFIG_PATH [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 2 0 "$@"
DEVICE_NUM="${POS[0]}"
need_int DEVICE_NUM 1
need_file CONFIG_PATH "CONFIG_PATH" "${POS[1]}"
MPIRUN="${MPIRUN:-mpirun}"
need_cmd "mpirun" "$MPIRUN" "install OpenMPI (e.g. apt-get install openmpi-bin) or set MPIRUN"
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

make_run_dir "train_distribute_gpu"
# Each process picks its device from its local rank: a DEVICE_ID (or rank table) left in
# the environment would put every rank on the same device.
unset DEVICE_ID RANK_ID RANK_TABLE_FILE
LAUNCH_ENV=("RANK_SIZE=$DEVICE_NUM")
launch 0 "$RUN_DIR/train.log" "$MPIRUN" -n "$DEVICE_NUM" --allow-run-as-root \
    --output-filename "$RUN_DIR/log_output" --merge-stderr-to-stdout \
    "$PYTHON" train.py --config_path "$CONFIG_PATH" --run_distribute True --device_target GPU \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
