#!/usr/bin/env bash
# Cortex-M benchmark of the generated C: for the six MicroNets and `tiny`
# (--pick max), with `mnet compile --random-weights 7`'s weights, on the
# emulated Cortex-M4 (QEMU mps2-an386, arm-none-eabi-gcc -O2, exact counts
# from mnet's TCG plugin): instructions per inference of the DSP kernels and
# of the generic loop nests (what mnet emitted before them), MACs per
# instruction, the network object's .text/.rodata/.bss, the painted stack
# depth, and the ratio against TFLM + CMSIS-NN.
#
# The TFLM figures are the anchors of issue 12 (TFLM built from source for
# the same emulated M4 and the same .tflite files, inference only): TFLM's
# sources are not reachable from this machine, so they are quoted, not
# re-measured. Every mnet figure is measured in this run, outputs checked
# against the reference interpreter.
#
# usage: bash bench/m4.sh [cortex-m4|cortex-m7]
#   (needs arm-none-eabi-gcc and qemu-system-arm: scripts/test.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=${1:-cortex-m4}
cargo build --release --quiet
mnet=./target/release/mnet
# model, TFLM reference kernels, TFLM + CMSIS-NN (issue 12, emulated M4).
anchors="kws_s 141805555 21579941
kws_m 239704443 36013709
kws_l 708833292 126344048
ad_s 189587156 41321561
ad_m 568521550 122332623
ad_l 624397694 130193725
tiny 483652 152694"
echo "cpu: $cpu"
echo
echo "| model | MACs | TFLM ref | TFLM + CMSIS-NN | mnet generic | mnet DSP | MACs/instr | DSP / CMSIS-NN | .text | .rodata | flash vs generic | .bss = arena | stack |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r name ref cmsis; do
    if [ "$name" = tiny ]; then
        src=examples/tiny.mnet
        pick="--pick max"
    else
        src=examples/micronets/$name.mnet
        pick=""
    fi
    run() {
        $mnet emulate "$src" $pick --random-weights 7 --inputs 1 --json --cpu "$1"
    }
    dsp=$(run "$cpu")
    gen=$(run generic)
    python3 - "$name" "$ref" "$cmsis" "$dsp" "$gen" <<'EOF'
import json, sys
name, ref, cmsis = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d, g = json.loads(sys.argv[4]), json.loads(sys.argv[5])
assert d["outputs_differing"] == 0 and g["outputs_differing"] == 0
i, gi = d["instructions"][0], g["instructions"][0]
s, gs = d["sizes"], g["sizes"]
flash, gflash = s["text"] + s["rodata"], gs["text"] + gs["rodata"]
print(f"| {name} | {d['macs']:,} | {ref:,} | {cmsis:,} | {gi:,} | {i:,} | {d['macs'] / i:.3f} | "
      f"{i / cmsis:.3f} | {s['text']:,} | {s['rodata']:,} | {flash / gflash - 1:+.1%} | "
      f"{s['bss']:,} | {d['stack']} |")
EOF
done <<<"$anchors"
