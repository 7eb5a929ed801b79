#!/usr/bin/env bash
# Training throughput: mnet-search vs TensorFlow/Keras on the same DS-CNN
# (49x10x1, 4 DS blocks, batch 100), widths 64 and 172, in one run on this
# machine (alternating, median of five), plus the 96x96x1 MobileNetV2-style
# stack for mnet. Prints a markdown table. Installs tensorflow-cpu into target/tf-venv on first use.
#
# usage: bash bench/train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venvs.sh
venv=$tf
cargo build --release --quiet -p mnet-search --example train_throughput
echo "| model | mnet samples/s | TensorFlow samples/s | ratio |"
echo "|---|---:|---:|---:|"
# This machine's speed drifts between runs (shared host): runs alternate
# between the two engines and each figure is the median of five.
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for width in 64 172; do
    ours_runs=""
    tf_runs=""
    for _ in 1 2 3 4 5; do
        ours_runs="$ours_runs $(./target/release/examples/train_throughput --width "$width" --blocks 4 --batch 100 --steps 20 | sed -n 's/^samples_per_sec: //p')"
        tf_runs="$tf_runs $("$venv/bin/python" bench/tf_baseline.py --width "$width" --blocks 4 --batch 100 2>/dev/null | sed -n 's/^samples_per_sec: //p')"
    done
    ours=$(echo $ours_runs | tr ' ' '\n' | median)
    tf=$(echo $tf_runs | tr ' ' '\n' | median)
    ratio=$(awk -v a="$ours" -v b="$tf" 'BEGIN { printf "%.2f", a / b }')
    echo "| DS-CNN width $width, batch 100 | $ours | $tf | $ratio |"
    echo "|   runs (mnet / TensorFlow) | $ours_runs | $tf_runs | |"
done
mb=$(./target/release/examples/train_throughput --mbv2 --batch 32 --steps 10 | sed -n 's/^samples_per_sec: //p')
echo "| MobileNetV2-style 96x96x1, batch 32 | $mb | - | - |"
