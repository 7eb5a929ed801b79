#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs them.
# - gcc-arm-none-eabi and qemu-system-arm (Debian packages; need root) for
#   the Cortex-M build and emulator tests;
# - dataset-fashion-mnist (Debian package; needs root) for the reader tests;
# - the pinned Python packages (tflite-micro, ai-edge-litert, numpy) are
#   installed by the tests themselves into target/oracle-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# need WHAT CHECK PACKAGE...: install Debian packages when CHECK fails.
need() {
    local what=$1 check=$2
    shift 2
    if ! eval "$check" >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
        else
            echo "scripts/test.sh: $what is missing; run as root or: sudo apt-get install $*" >&2
            exit 1
        fi
    fi
}
need gcc-arm-none-eabi 'command -v arm-none-eabi-gcc' gcc-arm-none-eabi libnewlib-arm-none-eabi
# The emulated Cortex-M4/M7 of the m4 runner (tests/models.rs).
need qemu-system-arm 'command -v qemu-system-arm' qemu-system-arm
# Debian's Fashion-MNIST: real data for the reader tests (tests/data.rs).
need Fashion-MNIST 'test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz' dataset-fashion-mnist
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
fi
cargo test --workspace --locked
