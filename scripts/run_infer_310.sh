#!/bin/bash
# Inference of an exported MINDIR on an Ascend 310, then accuracy with postprocess.py:
#   1. bash ascend310_infer/build.sh          (only if ascend310_infer/build/main is missing)
#   2. ascend310_infer/build/main --mindir_path=MINDIR --dataset_path=DATA_PATH --device_id=ID
#        --image_height=H --image_width=W --image_channels=C --mean=NORM_MEAN --std=NORM_STD
#        --output_dir=<run>/result_Files
#   3. python postprocess.py --config_path CONFIG --result_dir <run>/result_Files
#      (it scores the images of the config's val split found in result_Files, so DATA_PATH
#      should be that split's image folder)
# Environment: IMAGE_HEIGHT / IMAGE_WIDTH (default 300), NORM_MEAN / NORM_STD (the per-channel
# RGB statistics on the 0-255 scale, "r,g,b"; default the ImageNet ones SSD uses:
# 123.675,116.28,103.53 and 58.395,57.12,57.375). DEVICE_ID defaults to $DEVICE_ID or 0.
# Extra --key value flags go to postprocess.py. Logs: <run>/build.log, infer.log, acc.log.
#
# SSD (300x300, ImageNet statistics: the defaults):
#   bash scripts/run_infer_310.sh configs/ssd/ssd300.yaml ssd300.mindir /data/coco/val2017 0
# CRNN (32x100, mean = std = 127.5): its evaluation sets are LMDBs, so export their images
# first (file names <set>_<index>.<ext> are the stems postprocess.py looks for), all into one
# folder, then run on it:
#   for set in IIIT5k_3000 SVT IC03_860 IC13_857; do
#     python convert_text_lmdb.py --export_images --input data/data_lmdb_release/evaluation/$set \
#       --output crnn_eval_images
#   done
#   IMAGE_HEIGHT=32 IMAGE_WIDTH=100 NORM_MEAN=127.5,127.5,127.5 NORM_STD=127.5,127.5,127.5 \
#     bash scripts/run_infer_310.sh configs/crnn/crnn.yaml crnn.mindir crnn_eval_images 0
# The channel count comes from the config's image_channels (or an --image_channels flag): 3 for
# RGB, 1 for a grey CRNN such as configs/crnn/crnn_words.yaml. For a CRNN config, ImageNet
# NORM_MEAN/NORM_STD draw a warning.
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
IMAGENET_MEAN="123.675,116.28,103.53"
IMAGENET_STD="58.395,57.12,57.375"
NORM_MEAN="${NORM_MEAN:-$IMAGENET_MEAN}"
NORM_STD="${NORM_STD:-$IMAGENET_STD}"

# need_stats NAME MIN: check the variable NAME holds three comma-separated decimal numbers
# "r,g,b" (spaces dropped), each > 0 when MIN is "positive". Checked here so that a typo stops
# the run before the build, not after it inside the C++ program (which checks again).
need_stats() {
    local name="$1" min="$2" value item
    local number='[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?'
    value="${!name-}"
    value="${value//[[:space:]]/}"
    [[ "$value" =~ ^${number},${number},${number}$ ]] ||
        usage_error "$name must be three numbers r,g,b (e.g. 127.5,127.5,127.5), got '${!name-}'"
    if [[ "$min" == "positive" ]]; then
        local -a items
        IFS=, read -r -a items <<< "$value"
        for item in "${items[@]}"; do
            # Positive: no minus sign and a non-zero digit before any exponent.
            [[ "$item" != -* && "${item%%[eE]*}" == *[1-9]* ]] ||
                usage_error "$name must be three positive numbers r,g,b (e.g. 127.5,127.5,127.5), got '${!name-}'"
        done
    fi
    printf -v "$name" '%s' "$value"
}
need_stats NORM_MEAN any
need_stats NORM_STD positive
is_dry_run || need_cmd "python" "$PYTHON" "set PYTHON or fix PATH"

# The model and image_channels of the config as postprocess.py will see it (base: files
# merged, then the extra --key value flags), one per line, empty when unset. Only what a
# wrong choice would silently spoil is looked at, before the long inference starts.
config_facts() {
    (cd "$REPO_ROOT" && "$PYTHON" - "$CONFIG_PATH" ${EXTRA[@]+"${EXTRA[@]}"} <<'PY'
import sys
from src.model_utils.config import load_yaml

try:
    data = load_yaml(sys.argv[1])
except Exception as err:  # yaml, missing base file, ...: name it and stop
    sys.exit(f"{type(err).__name__}: {err}")
args = sys.argv[2:]
for key in ("model", "image_channels"):
    value = data.get(key, "")
    for i, arg in enumerate(args):
        if arg == f"--{key}" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"--{key}="):
            value = arg.split("=", 1)[1]
    print(value)
PY
    )
}
if command -v "$PYTHON" >/dev/null 2>&1; then
    facts="$(config_facts)" || die "cannot read CONFIG_PATH '$CONFIG_PATH' (see the error above)"
    # $(...) drops trailing empty lines, so a read may meet the end of input: not an error.
    { read -r CONFIG_MODEL || true; read -r CONFIG_CHANNELS || true; } <<< "$facts"
    if [[ -n "$CONFIG_CHANNELS" && "$CONFIG_CHANNELS" != "3" && "$CONFIG_CHANNELS" != "1" ]]; then
        die "the config sets image_channels: $CONFIG_CHANNELS; the 310 program feeds 3 (RGB) or 1 (grey)"
    fi
    if [[ "$CONFIG_MODEL" == "crnn" && ( "$NORM_MEAN" == "$IMAGENET_MEAN" || "$NORM_STD" == "$IMAGENET_STD" ) ]]; then
        echo "[WARNING] $SCRIPT_NAME: the config is a CRNN but NORM_MEAN/NORM_STD are the ImageNet defaults;" \
             "CRNN was trained with NORM_MEAN=127.5,127.5,127.5 NORM_STD=127.5,127.5,127.5" >&2
    fi
fi

IMAGE_CHANNELS="${CONFIG_CHANNELS:-3}"
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
    --image_channels="$IMAGE_CHANNELS" --mean="$NORM_MEAN" --std="$NORM_STD" --output_dir="$RESULT_DIR"
run_step "$RUN_DIR/acc.log" "$PYTHON" postprocess.py --config_path "$CONFIG_PATH" \
    --result_dir "$RESULT_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
is_dry_run && exit 0
info "inference results: $RESULT_DIR"
info "accuracy log: $RUN_DIR/acc.log"
tail -n 20 "$RUN_DIR/acc.log"
