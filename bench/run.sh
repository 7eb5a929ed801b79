#!/usr/bin/env bash
# Host inference benchmark (issue 13): for the six MicroNets (random
# weights, seed 7), inferences/s on one thread of mnet's reference
# interpreter, its Cranelift JIT, LiteRT's default CPU path (XNNPACK) and
# LiteRT's reference kernels on the same .tflite, and the JIT's compile time.
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
for m in kws_s kws_m kws_l ad_s ad_m ad_l; do
    ./target/release/mnet compile "examples/micronets/$m.mnet" --random-weights 7 --emit tflite -o "$out" >/dev/null
done
cargo bench --quiet --bench run -- "$out"/*.tflite > "$out/mnet.txt"
"$venv/bin/python" bench/litert_rate.py "$out"/*.tflite 2>/dev/null | grep -E '^[a-z_]+ [0-9.]+ [0-9.]+$' > "$out/litert.txt"
echo "| model | interp /s | JIT /s | JIT / interp | XNNPACK /s | JIT / XNNPACK | LiteRT ref /s | JIT compile ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
join <(sort "$out/mnet.txt") <(sort "$out/litert.txt") | awk '{ printf "| %s | %s | %s | %.1f | %s | %.2f | %s | %s |\n", $1, $2, $3, $3 / $2, $5, $3 / $5, $6, $4 }'
