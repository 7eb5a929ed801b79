"""Run a .tflite model on a batch of int8 inputs with TensorFlow Lite Micro
(the bit-exact oracle) or LiteRT's reference kernels.

usage: run.py tflm|litert MODEL INPUTS.bin OUTPUTS.bin
       run.py tflm|litert --many LIST

With --many, LIST holds one job a line (MODEL, INPUTS.bin and OUTPUTS.bin
separated by tabs) and one line a job is printed: `result: ok`, or
`result: error ...` when the runtime refuses the model (other lines are the
runtime's own log).

INPUTS.bin holds N inputs back to back (int8, NHWC); OUTPUTS.bin receives the
N outputs back to back.
"""
import sys

import numpy as np


def tflm(data):
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(data)
    shape = tuple(it.get_input_details(0)["shape"])

    def run(x):
        it.set_input(x, 0)
        it.invoke()
        return it.get_output(0)

    return shape, run


def litert(data):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    i_idx = it.get_input_details()[0]["index"]
    o_idx = it.get_output_details()[0]["index"]
    shape = tuple(it.get_input_details()[0]["shape"])

    def run(x):
        it.set_tensor(i_idx, x)
        it.invoke()
        return it.get_tensor(o_idx)

    return shape, run


def main():
    runtime = sys.argv[1]
    if sys.argv[2] == "--many":
        for line in open(sys.argv[3]):
            model, inputs_path, outputs_path = line.rstrip("\n").split("\t")
            try:
                run_one(runtime, model, inputs_path, outputs_path)
                print("result: ok", flush=True)
            except Exception as e:  # the runtime's refusal is the result
                print("result: error " + " ".join(str(e).split()), flush=True)
        return
    run_one(runtime, *sys.argv[2:5])


def run_one(runtime, model, inputs_path, outputs_path):
    data = open(model, "rb").read()
    shape, run = {"tflm": tflm, "litert": litert}[runtime](data)
    size = int(np.prod(shape))
    raw = np.fromfile(inputs_path, dtype=np.int8)
    assert raw.size % size == 0, "input file is not a whole number of inputs"
    outs = [run(x).astype(np.int8).ravel() for x in raw.reshape((-1,) + shape)]
    np.concatenate(outs).tofile(outputs_path)


if __name__ == "__main__":
    main()
