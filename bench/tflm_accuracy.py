"""Int8 accuracy of a .tflite model in TensorFlow Lite Micro on a .npy set.

usage: python bench/tflm_accuracy.py MODEL.tflite DIR   (DIR/x.npy float32, DIR/y.npy labels)
prints: int8_accuracy: A

Inputs are quantized with the model's input scale and zero point (as a
device would), the prediction is the argmax of the int8 output.
"""
import sys

import numpy as np
from tflite_micro import runtime


def main():
    model, d = sys.argv[1:3]
    x = np.load(f"{d}/x.npy")
    y = np.load(f"{d}/y.npy")
    it = runtime.Interpreter.from_bytes(open(model, "rb").read())
    q = it.get_input_details(0)["quantization_parameters"]
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    shape = tuple(it.get_input_details(0)["shape"])
    correct = 0
    for xi, yi in zip(x, y):
        xq = np.clip(np.round(xi / scale) + zero, -128, 127).astype(np.int8).reshape(shape)
        it.set_input(xq, 0)
        it.invoke()
        correct += int(np.argmax(it.get_output(0).ravel()) == yi)
    print(f"int8_accuracy: {correct / len(y):.4f}")


if __name__ == "__main__":
    main()
