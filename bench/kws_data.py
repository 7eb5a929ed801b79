"""A keyword-spotting set in the Speech Commands layout of the MicroNets KWS
task, synthesised offline: the 10 keywords (yes no up down left right on off
stop go), `_unknown_` (20 other words) and `_silence_`, spoken by espeak-ng
with 8 voices x many variants, speeds and pitches, shifted in time and mixed
with background noise; then 49x10 MFCCs (40 ms frames, 20 ms stride, Hann,
1024-point FFT, 40 mel bins 20-7600 Hz, log(mel + 1e-6), DCT-II, first 10)
computed with TensorFlow's tf.signal, as the ML-zoo KWS models were trained
on. Splits are speaker-disjoint (a speaker is a voice + variant): 80% train,
10% validation, 10% test.

usage: python bench/kws_data.py OUT_DIR [--per-class 400] [--seed 0]
writes OUT_DIR/{train,val,test}/{x.npy (float32 [N, 49, 10, 1]), y.npy (int64 [N])}
"""
import argparse
import os
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN = ["bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
           "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero"]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
          "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "croak", "klatt", "klatt2", "klatt3", "whisper", "Storm", "adam", "Alicia"]
RATE = 16000


def speak(word, voice, speed, pitch, tmp):
    """One utterance as 16 kHz mono float samples in [-1, 1]."""
    raw = os.path.join(tmp, f"{word}-{voice}-{speed}-{pitch}.wav")
    out = raw + ".16k.wav"
    subprocess.run(["espeak-ng", "-w", raw, "-v", voice, "-s", str(speed), "-p", str(pitch), word],
                   check=True, capture_output=True)
    subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", out],
                   check=True, capture_output=True)
    with wave.open(out) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    os.remove(raw)
    os.remove(out)
    return data


def noise(rng, n):
    """White, pink or brown noise, unit peak."""
    kind = rng.integers(3)
    white = rng.standard_normal(n).astype(np.float32)
    if kind == 0:
        x = white
    elif kind == 1:
        spec = np.fft.rfft(white)
        spec /= np.sqrt(np.arange(1, spec.size + 1))
        x = np.fft.irfft(spec, n).astype(np.float32)
    else:
        x = np.cumsum(white)
        x -= np.linspace(x[0], x[-1], n)
    return x / (np.abs(x).max() + 1e-9)


def clip(rng, samples):
    """A 1 s clip: the utterance at a random offset (up to 200 ms late, or
    cut at 1 s), background noise mixed in with probability 0.8 at volume
    up to 0.1 (TensorFlow's speech_commands defaults)."""
    out = np.zeros(RATE, np.float32)
    shift = int(rng.integers(0, int(0.2 * RATE)))
    s = samples[: RATE - shift]
    out[shift: shift + s.size] = s
    if rng.random() < 0.8:
        out += rng.uniform(0, 0.1) * noise(rng, RATE)
    return np.clip(out, -1, 1)


def mfcc(clips):
    import tensorflow as tf

    x = tf.constant(np.stack(clips))
    stft = tf.signal.stft(x, frame_length=640, frame_step=320, fft_length=1024,
                          window_fn=tf.signal.hann_window)
    mag = tf.abs(stft)
    mel = tf.signal.linear_to_mel_weight_matrix(40, mag.shape[-1], RATE, 20.0, 7600.0)
    log_mel = tf.math.log(tf.tensordot(mag, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    speakers = [(v, var) for v in VOICES for var in VARIANTS]
    order = rng.permutation(len(speakers))
    n_test = n_val = len(speakers) // 10
    split_of = {}
    for rank, i in enumerate(order):
        split_of[speakers[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    # Jobs: (label, word or None for silence, speaker).
    jobs = []
    for label, word in enumerate(KEYWORDS):
        for k in range(a.per_class):
            jobs.append((label, word, speakers[(k * 7 + label) % len(speakers)], k))
    for k in range(a.per_class):
        jobs.append((len(KEYWORDS) + 1, UNKNOWN[k % len(UNKNOWN)], speakers[(k * 11) % len(speakers)], k))
    for k in range(a.per_class):
        jobs.append((len(KEYWORDS), None, speakers[k % len(speakers)], k))
    with tempfile.TemporaryDirectory() as tmp:
        def render(job):
            label, word, (voice, variant), k = job
            if word is None:
                return np.zeros(0, np.float32)
            speed = 110 + (7 * k + 13 * label) % 80
            pitch = 20 + (13 * k + 5 * label) % 70
            return speak(word, f"{voice}+{variant}", speed, pitch, tmp)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            utterances = list(pool.map(render, jobs))
    sets = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for (label, word, speaker, _), u in zip(jobs, utterances):
        c = clip(rng, u) if word is not None else rng.uniform(0, 0.3) * noise(rng, RATE) * (rng.random() < 0.9)
        xs, ys = sets[split_of[speaker]]
        xs.append(c.astype(np.float32))
        ys.append(label)
    for name, (xs, ys) in sets.items():
        d = os.path.join(a.out, name)
        os.makedirs(d, exist_ok=True)
        feats = mfcc(xs).astype(np.float32)[..., None]
        np.save(os.path.join(d, "x.npy"), feats)
        np.save(os.path.join(d, "y.npy"), np.array(ys, np.int64))
        counts = np.bincount(ys, minlength=12)
        print(f"{name}: {len(ys)} clips, per class {counts.tolist()}, features {feats.shape}")


if __name__ == "__main__":
    main()
