#!/bin/bash
# Inference of an exported MINDIR on an Ascend 310, then accuracy with postprocess.py:
#   1. bash ascend310_infer/build.sh          (only if ascend310_infer/build/main is missing)
#   2. ascend310_infer/build/main --mindir_path=MINDIR --dataset_path=DATA_PATH --device_id=ID
#        --image_height=H --image_width=W --output_dir=<run>/result_Files
#   3. python postprocess.py --config_path CONFIG --result_dir <run>/result_Files
#      (it scores the images of the config's val split found in result_Files, so DATA_PATH
#      should be that split's image folder)
# H and W come from IMAGE_HEIGHT / IMAGE_WIDTH (default 300). DEVICE_ID defaults to $DEVICE_ID or 0.
# Extra --key value flags go to postprocess.py. Logs: <run>/build.log, infer.log, acc.log.
USAGE="CONFIG_PATH MINDIR_PATH DATA_PATH [DEVICE_ID] [--key value ...]"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

split_args 3 1 "$@"
need_file CONFIG_PATH "CONFIG_PATH" "${POS[0]}"
need_file MINDIR_PATH "MINDIR_PATH" "${POS[1]}"
need_path DATA_PATH "DATA_PATH" "${POS[2]}"
DEVICE_ID="${POS[3]:-${DEVICE_ID:-0}}"
need_int DEVICE_ID
IMAGE_HEIGHT="${IMAGE_HEIGHT:-300}"
IMAGE_WIDTH="${IMAGE_WIDTH:-300}"
need_int IMAGE_HEIGHT 1
need_int IMAGE_WIDTH 1
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

INFER_MAIN="$REPO_ROOT/ascend310_infer/build/main"
make_run_dir "infer_310"
RESULT_DIR="$RUN_DIR/result_Files"
is_dry_run || mkdir -p "$RESULT_DIR"
LAUNCH_ENV=("RANK_ID=0" "DEVICE_ID=$DEVICE_ID" "RANK_SIZE=1")

if [[ ! -x "$INFER_MAIN" ]]; then
    if ! is_dry_run && [[ ! -f "$REPO_ROOT/ascend310_infer/build.sh" ]]; then
        die "$INFER_MAIN is missing and there is no ascend310_infer/build.sh to build it"
    fi
    run_step "$RUN_DIR/build.log" bash ascend310_infer/build.sh
    if ! is_dry_run && [[ ! -x "$INFER_MAIN" ]]; then
        die "ascend310_infer/build.sh finished but $INFER_MAIN was not built; see $RUN_DIR/build.log"
    fi
fi

run_step "$RUN_DIR/infer.log" "$INFER_MAIN" --mindir_path="$MINDIR_PATH" --dataset_path="$DATA_PATH" \
    --device_id="$DEVICE_ID" --image_height="$IMAGE_HEIGHT" --image_width="$IMAGE_WIDTH" \
    --output_dir="$RESULT_DIR"
run_step "$RUN_DIR/acc.log" "$PYTHON" postprocess.py --config_path "$CONFIG_PATH" \
    --result_dir "$RESULT_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
is_dry_run && exit 0
info "inference results: $RESULT_DIR"
info "accuracy log: $RUN_DIR/acc.log"
tail -n 20 "$RUN_DIR/acc.log"
