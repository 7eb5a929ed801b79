"""Run a .tflite model on a batch of int8 inputs with TensorFlow Lite Micro
(the bit-exact oracle) and, with --litert, LiteRT's reference kernels.

usage: run_tflm.py MODEL INPUTS.bin OUTPUTS.bin [--litert LITERT_OUTPUTS.bin]

INPUTS.bin holds N inputs back to back (int8, NHWC); OUTPUTS.bin receives the
N outputs back to back.
"""
import sys

import numpy as np
from tflite_micro import runtime


def main():
    model, inputs_path, outputs_path = sys.argv[1:4]
    data = open(model, "rb").read()
    it = runtime.Interpreter.from_bytes(data)
    din = it.get_input_details(0)
    shape = tuple(din["shape"])
    size = int(np.prod(shape))
    raw = np.fromfile(inputs_path, dtype=np.int8)
    assert raw.size % size == 0, "input file is not a whole number of inputs"
    outs = []
    for x in raw.reshape((-1,) + shape):
        it.set_input(x, 0)
        it.invoke()
        outs.append(it.get_output(0).astype(np.int8).ravel())
    np.concatenate(outs).tofile(outputs_path)
    if len(sys.argv) > 5 and sys.argv[4] == "--litert":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        lt = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        lt.allocate_tensors()
        i_idx = lt.get_input_details()[0]["index"]
        o_idx = lt.get_output_details()[0]["index"]
        louts = []
        for x in raw.reshape((-1,) + shape):
            lt.set_tensor(i_idx, x)
            lt.invoke()
            louts.append(lt.get_tensor(o_idx).astype(np.int8).ravel())
        np.concatenate(louts).tofile(sys.argv[5])


if __name__ == "__main__":
    main()
