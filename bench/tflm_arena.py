"""Smallest arena_size with which TFLM (reference kernels, the tflite-micro
wheel) constructs a model and runs one inference, found by bisection.

usage: tflm_arena.py MODEL.tflite...   prints "MODEL BYTES" per model
"""
import os
import sys

import numpy as np
from tflite_micro import runtime


def ok(data, size):
    # TFLM prints to stdout/stderr on every construction; keep the output clean.
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        it = runtime.Interpreter.from_bytes(data, arena_size=size)
        d = it.get_input_details(0)
        it.set_input(np.zeros(d["shape"], dtype=np.int8), 0)
        it.invoke()
        return True
    except RuntimeError:
        return False
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(null)


def minimal_arena(data):
    lo, hi = 0, max(16 * 1024, 10 * len(data))
    while not ok(data, hi):
        hi *= 2
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        if ok(data, mid):
            hi = mid
        else:
            lo = mid
    return hi


for path in sys.argv[1:]:
    print(path, minimal_arena(open(path, "rb").read()), flush=True)
