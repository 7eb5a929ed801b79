"""The MFCC oracle: TensorFlow's tf.signal on the rows `mnet features
--list` names (a clip path relative to DIR, or `NOISE at OFFSET x VOLUME`
for a silence row), with the KWS front-end of the ML-zoo models: 1 s at
16 kHz, 640-sample frames every 320, periodic Hann window, 1024-point FFT,
magnitude, 40 mel bins 20-7600 Hz, log(mel + 1e-6), MFCCs, the first 10.

usage: python tests/oracle/mfcc.py DIR ROWS.tsv OUT.npy   (float32 [N, 49, 10, 1])
"""
import sys

import numpy as np
import tensorflow as tf


def samples(root, source):
    if " at " in source:
        path, rest = source.split(" at ")
        offset, volume = rest.split(" x ")
        audio, _ = tf.audio.decode_wav(tf.io.read_file(f"{root}/{path}"))
        cut = audio[int(offset):int(offset) + 16000, 0] * float(volume)
        return tf.clip_by_value(cut, -1.0, 1.0)
    audio, _ = tf.audio.decode_wav(tf.io.read_file(f"{root}/{source}"), desired_channels=1,
                                   desired_samples=16000)
    return audio[:, 0]


def mfcc(x):
    stft = tf.signal.stft(x, frame_length=640, frame_step=320, fft_length=1024,
                          window_fn=tf.signal.hann_window)
    spectrogram = tf.abs(stft)
    mel = tf.signal.linear_to_mel_weight_matrix(40, spectrogram.shape[-1], 16000, 20.0, 7600.0)
    log_mel = tf.math.log(tf.tensordot(spectrogram, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10]


def main():
    root, rows, out = sys.argv[1:4]
    with open(rows) as f:
        next(f)
        sources = [line.rstrip("\n").split("\t")[1] for line in f if line.strip()]
    x = np.stack([mfcc(samples(root, s)).numpy() for s in sources])
    np.save(out, x[..., None].astype(np.float32))


if __name__ == "__main__":
    main()
