#!/usr/bin/env bash
# Backend benchmark: for the MicroNet models and the tiny example, the
# .tflite size, the Cortex-M4 build size of the generated C, mnet's arena,
# TFLM's minimal arena for the same .tflite (bisection on arena_size with the
# tflite-micro Python interpreter, reference kernels), their ratio, and the
# time of `mnet compile` on kws_l; then the same for the converter-written
# models of tests/tflite/ imported. Prints markdown tables.
#
# usage: bash bench/backends.sh   (needs arm-none-eabi-gcc: scripts/test.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
venv=target/oracle-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet tflite-micro==0.dev20261023182759 ai-edge-litert==2.3.0 numpy==2.4.6
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
models="examples/micronets/kws_s.mnet examples/micronets/kws_m.mnet examples/micronets/kws_l.mnet examples/micronets/ad_s.mnet examples/micronets/ad_m.mnet examples/micronets/ad_l.mnet examples/tiny.mnet"
echo "| model | tflite bytes | C .text (M4) | mnet arena | TFLM min arena | ratio |"
echo "|---|---:|---:|---:|---:|---:|"
# One table row: NAME, the .tflite TFLM runs, mnet's arena; the C in $out.
row() {
    local name=$1 tflite=$2 arena=$3
    arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -O2 -Wall -Wextra -Werror -c "$out/$name.c" -o "$out/$name.o"
    local text tbytes tflm ratio
    text=$(arm-none-eabi-size "$out/$name.o" | awk 'NR==2 {print $1}')
    tbytes=$(stat -c %s "$tflite")
    # A model TFLM cannot load (an operator it lacks) has no TFLM figure.
    if tflm=$("$venv/bin/python" bench/tflm_arena.py "$tflite" 2>/dev/null | awk '{print $2}') && [ -n "$tflm" ]; then
        ratio=$(awk -v a="$arena" -v b="$tflm" 'BEGIN { printf "%.2f", a / b }')
    else
        tflm="TFLM cannot run it"
        ratio="-"
    fi
    echo "| $name | $tbytes | $text | $arena | $tflm | $ratio |"
}
for m in $models; do
    name=$(basename "$m" .mnet)
    pick=""
    [ "$name" = tiny ] && pick="--pick min"
    arena=$(./target/release/mnet compile "$m" $pick --random-weights 1 --emit tflite,c -o "$out" --force | sed -n 's/^arena: \([0-9]*\) bytes/\1/p')
    row "$name" "$out/$name.tflite" "$arena"
done
# Compile time of the largest KWS model (best of 10), mnet alone: --estimate
# skips the arm-none-eabi-gcc build of the memory report (~0.8 s on kws_l).
best=999999
for _ in $(seq 10); do
    s=$(date +%s%N)
    ./target/release/mnet compile examples/micronets/kws_l.mnet --random-weights 1 --emit tflite,c -o "$out" --force --estimate >/dev/null
    e=$(date +%s%N)
    t=$(( (e - s) / 1000000 ))
    [ "$t" -lt "$best" ] && best=$t
done
echo
echo "compile_kws_l_ms: $best (target 200, ratio $(awk -v a="$best" 'BEGIN { printf "%.2f", a / 200 }'))"
# The converter-written models of tests/tflite/, imported: mnet's arena
# against TFLM's minimal arena for the converter's own file.
echo
echo "| imported model | tflite bytes | C .text (M4) | mnet arena | TFLM min arena | ratio |"
echo "|---|---:|---:|---:|---:|---:|"
for m in tests/tflite/*.tflite; do
    name=$(basename "$m" .tflite)
    arena=$(./target/release/mnet compile "$m" --emit c -o "$out" --force --estimate | sed -n 's/^arena: \([0-9]*\) bytes/\1/p')
    row "$name" "$m" "$arena"
done
