"""Makes the converter-written test models of tests/tflite/: small Keras
networks, seeded, converted by TensorFlow's TFLite converter with full-integer
quantization (int8 weights, activations, input and output), so that mnet's
importer is tested on files it did not write.

Run with the pinned TensorFlow of bench/venvs.sh (target/tf-venv):
    target/tf-venv/bin/python tests/tflite/make.py tests/tflite
The output is deterministic for a TensorFlow version: weights and
calibration data come from fixed seeds.
"""

import os
import sys
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf

L = tf.keras.layers


def ds_cnn():
    """DS-CNN for keyword spotting (MicroNets' KWS baseline shape): a 10x4
    conv, two depthwise-separable blocks, average pooling, dense (logits:
    a softmax's 1/256 steps would hide most differences between inputs)."""
    x = inp = L.Input((49, 10, 1))
    x = L.Conv2D(32, (10, 4), strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for _ in range(2):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Conv2D(32, 1, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.AveragePooling2D(pool_size=(25, 5))(x)
    x = L.Flatten()(x)
    x = L.Dense(12)(x)
    return tf.keras.Model(inp, x)


def residual_blocks():
    """MobileNetV2-style inverted residuals with adds, ReLU6, a valid-padded
    strided conv, global average pooling (MEAN), dense."""
    x = inp = L.Input((24, 24, 3))
    x = L.Conv2D(16, 3, strides=2, padding="valid")(x)
    x = L.ReLU(6.0)(x)
    for expand in (2, 3):
        y = L.Conv2D(16 * expand, 1)(x)
        y = L.ReLU(6.0)(y)
        y = L.DepthwiseConv2D(3, padding="same")(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(16, 1)(y)
        x = L.Add()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(10)(x)
    return tf.keras.Model(inp, x)


def global_pool_keepdims():
    """Global average pooling that keeps its 1x1 map (MEAN with keep_dims),
    a 1x1 conv as the classifier, flatten, softmax."""
    x = inp = L.Input((12, 12, 4))
    x = L.Conv2D(16, 3, activation="relu")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Conv2D(7, 1)(x)
    x = L.Flatten()(x)
    x = L.Softmax()(x)
    return tf.keras.Model(inp, x)


def dense_concat_maxpool():
    """Two branches concatenated, max pooling (same and valid), a hidden
    dense layer with relu, dense, softmax."""
    x = inp = L.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.MaxPooling2D(2)(x)
    a = L.Conv2D(8, 1, activation="relu")(x)
    b = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = L.Concatenate()([a, b])
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    x = L.Dense(5)(x)
    x = L.Softmax()(x)
    return tf.keras.Model(inp, x)


def dense_variants(batch=None):
    """Dense layers as the converter writes them: on a 4-D tensor (applied
    per pixel: a FULLY_CONNECTED over rows of the map; with a dynamic batch
    the converter computes the rows' shape with SHAPE, GATHER, REDUCE_PROD
    and PACK, and TFLM has no REDUCE_PROD), without a bias, with a fused
    relu, then on the flattened map."""
    x = inp = L.Input((6, 6, 4), batch_size=batch)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Dense(12, use_bias=False, activation="relu")(x)
    x = L.Flatten()(x)
    x = L.Dense(6)(x)
    return tf.keras.Model(inp, x)


MODELS = {
    "ds_cnn": ds_cnn,
    "residual_blocks": residual_blocks,
    "dense_concat_maxpool": dense_concat_maxpool,
    "dense_variants": dense_variants,
    # The same with a batch of 1: static shapes, which TFLM runs.
    "dense_variants_batch1": lambda: dense_variants(batch=1),
    "global_pool_keepdims": global_pool_keepdims,
}


def convert(model, seed):
    shape = model.input_shape[1:]
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-1.0, 1.0, size=(64,) + tuple(shape)).astype(np.float32)

    def representative():
        for row in calib:
            yield [row[None]]

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    return c.convert()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__)
    for name, make in sorted(MODELS.items()):
        # A seed of the model's own (adding a model changes no other).
        seed = zlib.crc32(name.encode()) % 10000
        tf.keras.utils.set_random_seed(seed)
        model = make()
        # Batch norms with statistics of their own, not the identity.
        for layer in model.layers:
            if isinstance(layer, L.BatchNormalization):
                n = layer.moving_mean.shape[0]
                rng = np.random.default_rng(seed + n)
                layer.set_weights([
                    rng.uniform(0.5, 1.5, n).astype(np.float32),
                    rng.uniform(-0.2, 0.2, n).astype(np.float32),
                    rng.uniform(-0.2, 0.2, n).astype(np.float32),
                    rng.uniform(0.5, 2.0, n).astype(np.float32),
                ])
        # Random initial weights make a nearly uniform classifier whose int8
        # outputs hardly depend on the input; a larger last layer spreads
        # them (the tests need outputs that tell inputs apart).
        last = [layer for layer in model.layers if isinstance(layer, (L.Dense, L.Conv2D))][-1]
        weights = last.get_weights()
        last.set_weights([weights[0] * 8.0] + weights[1:])
        path = os.path.join(out, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(convert(model, seed))
        print(path)


if __name__ == "__main__":
    main()
