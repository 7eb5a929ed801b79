#!/usr/bin/env bash
# DNAS against uniform width scaling on the Speech Commands layout of
# bench/speech_commands_data.py (the paper's claim: the searched network
# lies on or above the accuracy/ops curve of width-scaled DS-CNNs). The
# DS-CNN of bench/models/ds_cnn.mnet at widths 32, 64, 128, 172, trained
# with `mnet train --data speech-commands:DIR` (EPOCHS, batch 32, --keep
# last), then `mnet search examples/kws.mnet` on the same data with the
# widths' validation accuracies as `--compare` points (drawn in its
# report.html) and the same retraining length; batch 32 everywhere (the
# supernet needs the steps on a small set: at batch 100 it barely learnt
# and collapsed to 4 M ops). Every network is then
# scored on the test split, float and int8 (`mnet eval --int8`).
#
# usage: bash bench/kws_search.sh   (EPOCHS=25 WIDTHS="32 64 128 172" SEED=0 SC=target/speech-commands)
# A harder set: SC=target/speech-commands-hard (made here: 150 clips per
# keyword with noise up to volume 0.5 mixed into every clip).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-25}
WIDTHS=${WIDTHS:-"32 64 128 172"}
SEED=${SEED:-0}
sc=${SC:-target/speech-commands}
if [ ! -f "$sc/testing_list.txt" ]; then
    case $sc in
        *-hard) target/tf-venv/bin/python bench/speech_commands_data.py "$sc" --per-word 150 --per-unknown 30 --noise 0.5 ;;
        *) echo "run bench/kws_accuracy.sh first (it generates $sc)" >&2; exit 1 ;;
    esac
fi
cargo build --release --quiet
mnet=./target/release/mnet
out=target/kws-search-$(basename "$sc")-seed$SEED
mkdir -p "$out"
data="speech-commands:$sc"
json() { python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }
ops_of() { "$mnet" stats "$1" --json | json "r['ops']"; }
echo "[" > "$out/compare.json"
rows=""
sep=""
for w in $WIDTHS; do
    sed "s/out: 64/out: $w/g" bench/models/ds_cnn.mnet > "$out/ds_cnn_$w.mnet"
    "$mnet" train "$out/ds_cnn_$w.mnet" --data "$data" --keep last --epochs "$EPOCHS" --seed "$SEED" \
        -o "$out/w$w" --force >/dev/null 2>&1
    ops=$(ops_of "$out/ds_cnn_$w.mnet")
    val=$("$mnet" eval "$out/ds_cnn_$w.mnet" --weights "$out/w$w/ds_cnn.safetensors" --data "$data" --split val --int8 --json | json "r['int8']['accuracy']")
    test=$("$mnet" eval "$out/ds_cnn_$w.mnet" --weights "$out/w$w/ds_cnn.safetensors" --data "$data" --int8 --json | json "f\"{r['float']['accuracy']:.4f} {r['int8']['accuracy']:.4f}\"")
    echo "$sep{\"label\": \"DS-CNN w$w\", \"ops\": $ops, \"accuracy\": $val}" >> "$out/compare.json"
    sep=","
    rows="$rows| DS-CNN width $w | $ops | $val | ${test% *} | ${test#* } |\n"
    echo "width $w: $ops ops, val int8 $val, test $test" >&2
done
echo "]" >> "$out/compare.json"
start=$(date +%s)
"$mnet" search examples/kws.mnet --data "$data" --retrain-epochs "$EPOCHS" --seed "$SEED" \
    --compare "$out/compare.json" -o "$out/search" --force >/dev/null 2>"$out/search.log"
secs=$(( $(date +%s) - start ))
s="$out/search"
ops=$(json "r['result']['ops']" < "$s/search.json")
val=$(json "f\"{r['result']['held_out_int8_accuracy']:.4f}\"" < "$s/search.json")
test=$("$mnet" eval "$s/kws.mnet" --weights "$s/kws.safetensors" --data "$data" --int8 --json | json "f\"{r['float']['accuracy']:.4f} {r['int8']['accuracy']:.4f}\"")
echo "| network | ops | val int8 | test float | test int8 |"
echo "|---|---|---|---|---|"
printf "$rows"
echo "| mnet search examples/kws.mnet ($secs s) | $ops | $val | ${test% *} | ${test#* } |"
