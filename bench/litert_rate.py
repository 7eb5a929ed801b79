"""LiteRT's inferences per second on one thread for each .tflite: its
default CPU path (XNNPACK delegate) and its reference kernels
(BUILTIN_REF), each run for at least a second over random int8 inputs.

usage: litert_rate.py MODEL.tflite...   prints "NAME XNNPACK_PER_S REF_PER_S"
"""
import os
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def rate(data, resolver):
    it = Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(7)
    xs = [rng.integers(-128, 128, size=d["shape"], dtype=np.int8) for _ in range(16)]
    it.set_tensor(d["index"], xs[0])
    it.invoke()  # warm-up (XNNPACK packs its weights on the first run)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0 or n < 3:
        it.set_tensor(d["index"], xs[n % len(xs)])
        it.invoke()
        n += 1
    return n / (time.perf_counter() - start)


for path in sys.argv[1:]:
    data = open(path, "rb").read()
    name = os.path.splitext(os.path.basename(path))[0]
    xnn = rate(data, OpResolverType.BUILTIN)
    ref = rate(data, OpResolverType.BUILTIN_REF)
    print(f"{name} {xnn:.1f} {ref:.1f}", flush=True)
