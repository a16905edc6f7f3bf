#!/usr/bin/env python3
"""Writes tests/fixtures/data/: expected outputs of the Python pieces the data loaders must
reproduce, checked by tests/data_*.rs.

* pyrandom.json: random.Random(seed).shuffle(list(range(n))) (the ELPV split).
* pil_resize.json: PIL Image.resize with BILINEAR (RGB) and NEAREST (L) on small random images.
* cifar_*.pkl: tiny CIFAR-style batches (dict with `data` uint8 N x 3072 and `labels`):
  - cifar_py3_p2.pkl, cifar_py3_p4.pkl: pickle.dump by Python 3 at protocols 2 and 4;
  - cifar_py2.pkl: the opcodes Python 2's cPickle writes for the published CIFAR files (str
    as SHORT_BINSTRING/BINSTRING), assembled here and checked to load with pickle.loads.
  cifar_expected.json holds their labels and pixels.
* cifar100_batch.pkl, cifar100_meta.pkl: a CIFAR-100-style batch (fine_labels, coarse_labels)
  and meta file (fine_label_names, coarse_label_names), Python 3 protocol 3.

Setup: python3 -m venv .venv && .venv/bin/pip install numpy pillow
       .venv/bin/python scripts/make_data_fixtures.py
"""
import json
import os
import pickle
import random
import struct
import sys

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "data")


def py2_cifar_pickle(labels, data):
    n, row = data.shape
    b = bytearray(b"\x80\x02}q\x00(")

    def sbs(s):
        s = s.encode() if isinstance(s, str) else s
        return (b"U" + bytes([len(s)]) + s) if len(s) < 256 else (b"T" + struct.pack("<I", len(s)) + s)

    b += sbs("batch_label") + sbs("tiny batch")
    b += sbs("labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    b += sbs("data")
    b += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + sbs("b") + b"\x87R"
    b += b"(K\x01" + b"K" + bytes([n]) + b"M" + struct.pack("<H", row) + b"\x86"
    b += b"cnumpy\ndtype\n" + sbs("u1") + b"K\x00K\x01\x87R"
    b += b"(K\x03" + sbs("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    b += b"\x89" + sbs(data.tobytes()) + b"tb"
    b += b"u."
    return bytes(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    shuffles = []
    for seed in (0, 12345678901):
        for n in (1, 2, 5, 10, 100, 1000):
            x = list(range(n))
            random.Random(seed).shuffle(x)
            shuffles.append({"seed": seed, "n": n, "shuffled": x})
    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "pillow": PIL.__version__}
    with open(os.path.join(OUT, "pyrandom.json"), "w") as f:
        json.dump({"versions": meta, "cases": shuffles}, f)

    rng = np.random.default_rng(7)
    cases = []
    for (w, h), sizes in (((13, 11), [(7, 5), (29, 23), (13, 4)]), ((40, 30), [(9, 8), (40, 30)])):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        for ow, oh in sizes:
            cases.append({
                "width": w, "height": h, "out_width": ow, "out_height": oh,
                "rgb": rgb.ravel().tolist(),
                "rgb_bilinear": np.asarray(Image.fromarray(rgb).resize((ow, oh), Image.BILINEAR)).ravel().tolist(),
                "grey": grey.ravel().tolist(),
                "grey_nearest": np.asarray(Image.fromarray(grey).resize((ow, oh), Image.NEAREST)).ravel().tolist(),
            })
    with open(os.path.join(OUT, "pil_resize.json"), "w") as f:
        json.dump({"versions": meta, "cases": cases}, f)

    n = 6
    labels = [3, 7, 0, 9, 3, 1]
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    batch = {"batch_label": "tiny batch", "labels": labels, "data": data}
    for proto in (2, 4):
        with open(os.path.join(OUT, f"cifar_py3_p{proto}.pkl"), "wb") as f:
            pickle.dump(batch, f, protocol=proto)
    raw = py2_cifar_pickle(labels, data)
    back = pickle.loads(raw, encoding="bytes")
    assert back[b"labels"] == labels and np.array_equal(back[b"data"], data)
    with open(os.path.join(OUT, "cifar_py2.pkl"), "wb") as f:
        f.write(raw)
    with open(os.path.join(OUT, "cifar_expected.json"), "w") as f:
        json.dump({"versions": meta, "labels": labels, "data": data.ravel().tolist()}, f)
    coarse = [19, 0, 4, 4, 0, 11]
    batch100 = {"filenames": [f"img{i}.png" for i in range(n)], "batch_label": "tiny",
                "fine_labels": [90, 4, 30, 31, 1, 50], "coarse_labels": coarse, "data": data}
    with open(os.path.join(OUT, "cifar100_batch.pkl"), "wb") as f:
        pickle.dump(batch100, f, protocol=3)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)]}
    with open(os.path.join(OUT, "cifar100_meta.pkl"), "wb") as f:
        pickle.dump(meta, f, protocol=3)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
