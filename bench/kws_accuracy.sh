#!/usr/bin/env bash
# KWS accuracy on a Speech Commands layout: `mnet train --data
# speech-commands:DIR` (its MFCC front-end, TensorFlow's split rules and
# augmentation) against TensorFlow/Keras on tf.signal features of the very
# same rows (`mnet features --list` names them; tests/oracle/mfcc.py
# computes them), the DS-CNN of bench/models/ds_cnn.mnet (width 64), the
# same epochs and batch, seeds 0..2. mnet is trained with and without its
# augmentation (Keras trains on fixed features); float and int8 test
# accuracy (mnet's int8 through `mnet eval --int8`, the interpreter that is
# bit-exact with TFLM; TF's through its converter and TFLM).
# The set: bench/speech_commands_data.py (espeak-ng, generated once into
# target/speech-commands).
#
# usage: bash bench/kws_accuracy.sh   (SEEDS="0 1 2" EPOCHS=25 PER_WORD=300)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-25}
PER_WORD=${PER_WORD:-300}
need=""
command -v espeak-ng >/dev/null || need="$need espeak-ng"
command -v sox >/dev/null || need="$need sox"
if [ -n "$need" ]; then
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
source bench/venvs.sh
cargo build --release --quiet
mnet=./target/release/mnet
sc=target/speech-commands
out=target/kws-accuracy
mkdir -p "$out"
[ -f "$sc/testing_list.txt" ] || "$tf/bin/python" bench/speech_commands_data.py "$sc" --per-word "$PER_WORD"
data="speech-commands:$sc"
# The same rows as tf.signal features, for Keras.
feat="$out/tf-features"
for split in train val test; do
    mkdir -p "$feat/$split"
    "$mnet" features --data "$data" --split "$split" -o "$out/$split-mnet.npy" --labels "$feat/$split/y.npy" \
        --list "$out/$split.tsv" --force >/dev/null
    "$tf/bin/python" tests/oracle/mfcc.py "$sc" "$out/$split.tsv" "$feat/$split/x.npy" 2>/dev/null
done
"$tf/bin/python" -c "
import numpy as np, sys
for s in ['train', 'test']:
    print(f'{s}: {len(np.load(sys.argv[1] + f\"/{s}/y.npy\"))} rows, per class', np.bincount(np.load(sys.argv[1] + f'/{s}/y.npy')).tolist())
" "$feat" >&2
acc() { python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['float']['accuracy']:.4f} {r['int8']['accuracy']:.4f}\")"; }
mean() { awk '{ s += $1; n++ } END { printf "%.4f", s / n }'; }
ma_f="" ma_i="" mn_f="" mn_i="" tf_f="" tf_i=""
for seed in $SEEDS; do
    for aug in on off; do
        run="$out/mnet-$aug-$seed"
        flags=""
        [ "$aug" = off ] && flags="--no-augment"
        start=$(date +%s)
        "$mnet" train bench/models/ds_cnn.mnet --data "$data" $flags --keep last --epochs "$EPOCHS" --batch 100 \
            --seed "$seed" -o "$run" --force >/dev/null 2>&1
        echo "mnet train augment=$aug seed $seed: $(( $(date +%s) - start )) s" >&2
        read -r f i < <("$mnet" eval bench/models/ds_cnn.mnet --weights "$run/ds_cnn.safetensors" --data "$data" --int8 --json | acc)
        if [ "$aug" = on ]; then ma_f="$ma_f $f"; ma_i="$ma_i $i"; else mn_f="$mn_f $f"; mn_i="$mn_i $i"; fi
    done
    t="$out/tf-$seed.tflite"
    tf_f="$tf_f $("$tf/bin/python" bench/accuracy_tf.py "$feat" --model ds_cnn --width 64 --epochs "$EPOCHS" --seed "$seed" --tflite "$t" 2>/dev/null | sed -n 's/^float_accuracy: //p')"
    tf_i="$tf_i $("$oracle/bin/python" bench/tflm_accuracy.py "$t" "$feat/test" | sed -n 's/^int8_accuracy: //p')"
done
m() { echo $1 | tr ' ' '\n' | mean; }
echo "| DS-CNN w64, $EPOCHS epochs, batch 100 | float test | int8 test | seeds $SEEDS (float; int8) |"
echo "|---|---|---|---|"
echo "| mnet, augmentation (TF defaults) | $(m "$ma_f") | $(m "$ma_i") |$ma_f;$ma_i |"
echo "| mnet, fixed features | $(m "$mn_f") | $(m "$mn_i") |$mn_f;$mn_i |"
echo "| TensorFlow/Keras, fixed tf.signal features | $(m "$tf_f") | $(m "$tf_i") |$tf_f;$tf_i |"
