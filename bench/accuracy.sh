#!/usr/bin/env bash
# Accuracy: `mnet train` with no optimizer or learning-rate flags against
# TensorFlow/Keras with its defaults (Adam 1e-3, Glorot), the same model,
# epochs and batch, 3 seeds each; float test accuracy, and int8 test
# accuracy in TFLM (mnet's model through `mnet compile`, TF's through its
# converter). Tasks: keyword spotting on the synthetic set of
# bench/kws_data.py (espeak-ng + sox, MFCCs by tf.signal; generated once
# into target/kws-data) with the DS-CNN of bench/models/ds_cnn.mnet at each
# width, and real Fashion-MNIST (Debian's dataset-fashion-mnist) with
# bench/models/fashion_cnn.mnet. Both frameworks train on the whole
# training split and are scored after the last epoch (`--keep last`), so
# the test split selects nothing.
#
# usage: bash bench/accuracy.sh
#   (SEEDS="0 1 2" TASKS="kws fashion" WIDTHS="64 172" KWS_EPOCHS=25 FASHION_EPOCHS=10)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
TASKS=${TASKS:-"kws fashion"}
WIDTHS=${WIDTHS:-"64 172"}
KWS_EPOCHS=${KWS_EPOCHS:-25}
FASHION_EPOCHS=${FASHION_EPOCHS:-10}
need=""
command -v espeak-ng >/dev/null || need="$need espeak-ng"
command -v sox >/dev/null || need="$need sox"
[ -d /usr/share/datasets/fashion-mnist ] || need="$need dataset-fashion-mnist"
if [ -n "$need" ]; then
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
source bench/venvs.sh
cargo build --release --quiet
mnet=./target/release/mnet
out=target/accuracy
mkdir -p "$out"
metric() { python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['validation_accuracy']:.4f}\")" "$1"; }
mean() { awk '{ s += $1; n++ } END { printf "%.4f", s / n }'; }
echo "| model, epochs, batch 100 | mnet float | TF float | mnet int8 (TFLM) | TF int8 (TFLM) |"
echo "|---|---|---|---|---|"
# row ID NAME MODEL.mnet DATA EPOCHS TF-ARGS...: one row of 3 seeds.
row() {
    local id=$1 name=$2 model=$3 data=$4 epochs=$5
    shift 5
    local stem mf="" tff="" mi="" tfi=""
    stem=$(basename "$model" .mnet)
    "$tf/bin/python" -c "import numpy as np; np.save('$out/$id-calib.npy', np.load('$data/train/x.npy')[:500])"
    for seed in $SEEDS; do
        local run="$out/mnet-$id-$seed"
        "$mnet" train "$model" --data "npy:$data/train" --val "npy:$data/test" \
            --keep last --epochs "$epochs" --batch 100 --seed "$seed" -o "$run" --force >/dev/null 2>&1
        mf="$mf $(metric "$run/$stem.metrics.json")"
        "$mnet" compile "$model" --weights "$run/$stem.safetensors" \
            --calib "$out/$id-calib.npy" -o "$run" --force >/dev/null
        mi="$mi $("$oracle/bin/python" bench/tflm_accuracy.py "$run/$stem.tflite" "$data/test" | sed -n 's/^int8_accuracy: //p')"
        local t="$out/tf-$id-$seed.tflite"
        tff="$tff $("$tf/bin/python" bench/accuracy_tf.py "$data" "$@" --epochs "$epochs" --seed "$seed" --tflite "$t" 2>/dev/null | sed -n 's/^float_accuracy: //p')"
        tfi="$tfi $("$oracle/bin/python" bench/tflm_accuracy.py "$t" "$data/test" | sed -n 's/^int8_accuracy: //p')"
    done
    echo "| $name, $epochs epochs: mean | $(echo $mf | tr ' ' '\n' | mean) | $(echo $tff | tr ' ' '\n' | mean) | $(echo $mi | tr ' ' '\n' | mean) | $(echo $tfi | tr ' ' '\n' | mean) |"
    echo "| $name: seeds $SEEDS |$mf |$tff |$mi |$tfi |"
}
for task in $TASKS; do
    case $task in
        kws)
            data=target/kws-data
            [ -f "$data/test/y.npy" ] || "$tf/bin/python" bench/kws_data.py "$data" 2>/dev/null
            for width in $WIDTHS; do
                sed "s/out: 64/out: $width/g" bench/models/ds_cnn.mnet > "$out/ds_cnn_$width.mnet"
                row "ds_cnn_$width" "DS-CNN width $width" "$out/ds_cnn_$width.mnet" "$data" "$KWS_EPOCHS" --model ds_cnn --width "$width"
            done
            ;;
        fashion)
            data=target/fashion-data
            [ -f "$data/test/y.npy" ] || "$tf/bin/python" bench/fashion_data.py "$data" >/dev/null
            row fashion "Fashion-MNIST CNN" bench/models/fashion_cnn.mnet "$data" "$FASHION_EPOCHS" --model fashion_cnn
            ;;
        *) echo "unknown task $task" >&2; exit 1 ;;
    esac
done
