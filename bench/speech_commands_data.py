"""A Speech Commands v2 layout synthesised offline, for bench/kws_accuracy.sh:
one folder per word of 16 kHz mono 16-bit WAV clips (espeak-ng, 8 voices x
20 variants, many speeds and pitches, each utterance at a random offset in
1 s, cut at 1 s), `_background_noise_/` (white, pink and brown noise, a hum
and a babble of utterances, 20 s each), and `validation_list.txt` /
`testing_list.txt` holding the clips of 10% / 10% of the speakers (a
speaker is a voice + variant), so the splits are speaker-disjoint as in
the real set. No noise is mixed into the clips: `mnet train` does that
while it trains (TensorFlow's defaults).

usage: python bench/speech_commands_data.py OUT_DIR [--per-word 300] [--per-unknown 60] [--noise 0] [--seed 0]
(--noise V mixes noise into every clip at a volume uniform in [0, V]: a
harder set, where the network's size shows in its accuracy)
"""
import argparse
import os
import sys
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from kws_data import KEYWORDS, RATE, UNKNOWN, VARIANTS, VOICES, noise, speak  # noqa: E402


def write(path, x):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-word", type=int, default=300)
    ap.add_argument("--per-unknown", type=int, default=60)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    speakers = [(v, var) for v in VOICES for var in VARIANTS]
    order = rng.permutation(len(speakers))
    n = len(speakers) // 10
    split_of = {}
    for rank, i in enumerate(order):
        split_of[speakers[i]] = "test" if rank < n else "val" if rank < 2 * n else "train"
    jobs = []
    for w, word in enumerate(KEYWORDS):
        jobs += [(word, speakers[(k * 7 + w) % len(speakers)], k) for k in range(a.per_word)]
    for w, word in enumerate(UNKNOWN):
        jobs += [(word, speakers[(k * 11 + w) % len(speakers)], k) for k in range(a.per_unknown)]
    with tempfile.TemporaryDirectory() as tmp:
        def render(job):
            word, (voice, variant), k = job
            speed = 110 + (7 * k + 13 * len(word)) % 80
            pitch = 20 + (13 * k + 5 * len(word)) % 70
            return speak(word, f"{voice}+{variant}", speed, pitch, tmp)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            utterances = list(pool.map(render, jobs))
    lists = {"val": [], "test": []}
    for (word, speaker, k), u in zip(jobs, utterances):
        os.makedirs(os.path.join(a.out, word), exist_ok=True)
        clip = np.zeros(RATE, np.float32)
        shift = int(rng.integers(0, max(1, RATE - min(u.size, RATE))))
        s = u[:RATE - shift]
        clip[shift:shift + s.size] = s
        if a.noise > 0:
            clip += rng.uniform(0, a.noise) * noise(rng, RATE)
        name = f"{word}/{speaker[0]}-{speaker[1]}_nohash_{k}.wav"
        write(os.path.join(a.out, name), clip)
        if split_of[speaker] in lists:
            lists[split_of[speaker]].append(name)
    for split, file in [("val", "validation_list.txt"), ("test", "testing_list.txt")]:
        with open(os.path.join(a.out, file), "w") as f:
            f.write("".join(f"{n}\n" for n in sorted(lists[split])))
    bg = os.path.join(a.out, "_background_noise_")
    os.makedirs(bg, exist_ok=True)
    long = 20 * RATE
    for kind in range(3):
        x = noise(np.random.default_rng(a.seed * 10 + kind), long)
        write(os.path.join(bg, ["white", "pink", "brown"][kind] + "_noise.wav"), 0.5 * x)
    t = np.arange(long) / RATE
    write(os.path.join(bg, "hum.wav"), 0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t))
    babble = np.zeros(long, np.float32)
    for u in utterances[:: max(1, len(utterances) // 200)]:
        at = int(rng.integers(0, long - u.size))
        babble[at:at + u.size] += 0.2 * u
    write(os.path.join(bg, "babble.wav"), babble / (np.abs(babble).max() + 1e-9) * 0.5)
    print(f"{len(jobs)} clips of {len(KEYWORDS) + len(UNKNOWN)} words; "
          f"{len(lists['val'])} listed for validation, {len(lists['test'])} for test")


if __name__ == "__main__":
    main()
