#!/usr/bin/env python3
"""Copy an MVTec-layout category with every image resized to SIDE x SIDE (JPEG, quality 95)
and every mask to SIDE x SIDE (PNG, nearest), keeping the folder and file stems.

For carrying a data set to a machine with a transfer limit; compare runs only on the same
shrunk copy. Usage: shrink_mvtec.py ROOT SIDE OUT [--max-test N]
(N: at most N images per test folder, the first by name)
"""
import argparse
import os

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("side", type=int)
    ap.add_argument("out")
    ap.add_argument("--max-test", type=int, default=0)
    a = ap.parse_args()
    for dirpath, _, files in os.walk(a.root):
        rel = os.path.relpath(dirpath, a.root)
        names = sorted(f for f in files if f.lower().endswith((".png", ".jpg", ".bmp", ".tif", ".tiff")))
        if a.max_test and rel.split(os.sep)[0] in ("test", "ground_truth"):
            if rel.startswith("ground_truth"):
                kept = sorted(os.listdir(os.path.join(a.root, "test", os.path.basename(dirpath))))
                keep = {os.path.splitext(f)[0] for f in kept[:a.max_test]}
                names = [f for f in names if os.path.splitext(f)[0].replace("_mask", "") in keep]
            else:
                names = names[:a.max_test]
        if not names:
            continue
        os.makedirs(os.path.join(a.out, rel), exist_ok=True)
        for f in names:
            im = Image.open(os.path.join(dirpath, f))
            stem = os.path.splitext(f)[0]
            if rel.startswith("ground_truth"):
                im.convert("L").resize((a.side, a.side), Image.NEAREST).save(os.path.join(a.out, rel, stem + ".png"))
            else:
                im.convert("RGB").resize((a.side, a.side), Image.BICUBIC).save(
                    os.path.join(a.out, rel, stem + ".jpg"), quality=95)


if __name__ == "__main__":
    main()
