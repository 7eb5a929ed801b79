#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them.
# - gcc-arm-none-eabi (Debian package; needs root) for the Cortex-M build test;
# - dataset-fashion-mnist (Debian package; needs root) for the reader tests;
# - the pinned Python packages (tflite-micro, ai-edge-litert, numpy) are
#   installed by the tests themselves into target/oracle-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-arm-none-eabi libnewlib-arm-none-eabi >/dev/null
    else
        echo "scripts/test.sh: gcc-arm-none-eabi is missing; run as root or: sudo apt-get install gcc-arm-none-eabi" >&2
        exit 1
    fi
fi
# Debian's Fashion-MNIST: real data for the reader tests (tests/data.rs).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "scripts/test.sh: Fashion-MNIST is missing; run as root or: sudo apt-get install dataset-fashion-mnist" >&2
        exit 1
    fi
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
fi
cargo test --workspace --locked
