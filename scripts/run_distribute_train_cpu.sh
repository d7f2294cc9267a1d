#!/bin/bash
# Distributed training with WORKER_NUM CPU processes on this machine through MindSpore's msrun:
#   msrun --worker_num=N --local_worker_num=N --master_addr=127.0.0.1 --master_port=PORT
#         --log_dir=<run>/msrun_log --join=True train.py ... --run_distribute True --device_target CPU
# PORT is a free local port unless MASTER_PORT is set. msrun runs the python on PATH.
# msrun's own output goes to <run>/train.log, each worker's to <run>/msrun_log/.
# Set MSRUN to use another msrun executable.
USAGE="WORKER_NUM CONFIG_PATH [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 2 0 "$@"
WORKER_NUM="${POS[0]}"
need_int WORKER_NUM 1
need_file CONFIG_PATH "CONFIG_PATH" "${POS[1]}"
MSRUN="${MSRUN:-msrun}"
need_cmd "msrun" "$MSRUN" "it is installed with mindspore (pip install mindspore), or set MSRUN"
need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

if [[ -n "${MASTER_PORT:-}" ]]; then
    need_int MASTER_PORT 1
    [[ $MASTER_PORT -le 65535 ]] || usage_error "MASTER_PORT must be <= 65535, got '$MASTER_PORT'"
else
    MASTER_PORT="$("$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')" || die "cannot find a free port; set MASTER_PORT"
fi

make_run_dir "train_distribute_cpu"
# Each process picks its device from its local rank: a DEVICE_ID (or rank table) left in
# the environment would put every rank on the same device.
unset DEVICE_ID RANK_ID RANK_TABLE_FILE
LAUNCH_ENV=("RANK_SIZE=$WORKER_NUM")
launch 0 "$RUN_DIR/train.log" "$MSRUN" --worker_num="$WORKER_NUM" --local_worker_num="$WORKER_NUM" \
    --master_addr=127.0.0.1 --master_port="$MASTER_PORT" --log_dir="$RUN_DIR/msrun_log" --join=True \
    train.py --config_path "$CONFIG_PATH" --run_distribute True --device_target CPU \
    --output_dir "$RUN_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
finish_launch
