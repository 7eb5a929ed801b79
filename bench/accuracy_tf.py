"""The TensorFlow/Keras side of bench/accuracy.sh: the twin of a model of
bench/models/ (bench/tf_models.py) trained with Keras' defaults (Adam
1e-3, Glorot-uniform), evaluated on the test split, and converted to a
full-integer int8 .tflite (representative data: 500 training samples) for
TFLM.

usage: python bench/accuracy_tf.py DATA_DIR [--model ds_cnn --width 64 | --model fashion_cnn] --epochs 25 --batch 100 --seed 0 --tflite OUT.tflite
prints: float_accuracy: A
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default="ds_cnn", choices=["ds_cnn", "fashion_cnn"])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tflite", required=True)
    a = ap.parse_args()
    os.environ["PYTHONHASHSEED"] = str(a.seed)
    import tensorflow as tf

    import tf_models

    tf.keras.utils.set_random_seed(a.seed)
    xs = np.load(f"{a.data}/train/x.npy")
    ys = np.load(f"{a.data}/train/y.npy")
    xt = np.load(f"{a.data}/test/x.npy")
    yt = np.load(f"{a.data}/test/y.npy")
    if a.model == "ds_cnn":
        model = tf_models.ds_cnn(a.width, input_shape=xs.shape[1:], classes=int(ys.max()) + 1)
    else:
        model = tf_models.fashion_cnn(xs.shape[1:], classes=int(ys.max()) + 1)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(xs, ys, batch_size=a.batch, epochs=a.epochs, verbose=0, shuffle=True)
    _, acc = model.evaluate(xt, yt, verbose=0)
    print(f"float_accuracy: {acc:.4f}")

    def representative():
        for i in range(0, 500):
            yield [xs[i: i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    open(a.tflite, "wb").write(conv.convert())


if __name__ == "__main__":
    main()
