"""TensorFlow/Keras training throughput on the DS-CNN of
reference/training-engines.md (same shapes as the mnet-search
train_throughput example): 49x10x1 input; Conv2D(width, 10x4, stride 2, same,
no bias) + BN + ReLU; blocks x [DepthwiseConv2D(3x3, same, no bias) + BN +
ReLU, Conv2D(width, 1x1, no bias) + BN + ReLU]; global average pool;
Dense(12) logits. SGD lr 0.01 momentum 0.9, batch 100, random data; one
warm-up epoch, then 2 timed epochs of 2000 samples.

usage: python bench/tf_baseline.py --width 64 --blocks 4   (last line: samples_per_sec: N)
"""
import argparse
import time

import numpy as np
import tensorflow as tf

from tf_models import ds_cnn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    a = ap.parse_args()
    model = ds_cnn(a.width, a.blocks)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.01, momentum=0.9),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((2000, 49, 10, 1)).astype(np.float32)
    ys = rng.integers(0, 12, 2000)
    model.fit(xs, ys, batch_size=a.batch, epochs=1, verbose=0)
    t = time.perf_counter()
    model.fit(xs, ys, batch_size=a.batch, epochs=2, verbose=0)
    dt = time.perf_counter() - t
    print(f"width {a.width}, blocks {a.blocks}, batch {a.batch}: {dt * 1e3 / 40:.1f} ms/step")
    print(f"samples_per_sec: {4000 / dt:.1f}")


if __name__ == "__main__":
    main()
