"""Keras models of the benchmarks, defined once, each the twin of a file
in bench/models/ (no conv biases, batch norm + relu after every conv,
global average pool, dense logits)."""


def ds_cnn(width, blocks=4, input_shape=(49, 10, 1), classes=12):
    """The DS-CNN of bench/models/ds_cnn.mnet: a 10x4 stride-2 conv and
    `blocks` depthwise-separable blocks."""
    import tensorflow as tf

    L = tf.keras.layers
    x = inp = L.Input(input_shape)
    x = L.Conv2D(width, (10, 4), strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    for _ in range(blocks):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(width, 1, use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Dense(classes)(L.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inp, x)


def fashion_cnn(input_shape=(28, 28, 1), classes=10):
    """The small CNN of bench/models/fashion_cnn.mnet."""
    import tensorflow as tf

    L = tf.keras.layers
    x = inp = L.Input(input_shape)
    for width, pool in [(16, True), (32, True), (32, False)]:
        x = L.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        if pool:
            x = L.MaxPooling2D(2)(x)
    x = L.Dense(classes)(L.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inp, x)
