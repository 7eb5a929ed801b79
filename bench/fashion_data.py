"""Fashion-MNIST (Debian's dataset-fashion-mnist, gzipped IDX files under
/usr/share/datasets/fashion-mnist) as .npy for `mnet train --data npy:DIR`:
images float32 [N, 28, 28, 1] scaled to [0, 1], labels int64 [N].

usage: python bench/fashion_data.py OUT_DIR   (writes OUT_DIR/{train,test}/{x,y}.npy)
"""
import gzip
import os
import sys

import numpy as np

SRC = "/usr/share/datasets/fashion-mnist"


def read(name, offset):
    with gzip.open(os.path.join(SRC, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    out = sys.argv[1]
    for split, prefix in [("train", "train"), ("test", "t10k")]:
        x = read(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1).astype(np.float32) / 255
        y = read(f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
        d = os.path.join(out, split)
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "x.npy"), x)
        np.save(os.path.join(d, "y.npy"), y)
        print(f"{split}: {x.shape} images, {np.bincount(y).tolist()} per class")


if __name__ == "__main__":
    main()
