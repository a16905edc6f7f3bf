#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/*.json: expected metric values from scikit-learn and
scikit-image, which the Rust tests in tests/eval_metrics.rs compare against.

* ranking.json: roc_auc_score, average_precision_score, roc_curve, and Dinomaly's
  f1_score_max (precision_recall_curve, 2PR/(P+R+1e-7), last point dropped) on random and
  tied float32 scores.
* aupro.json: AUPRO as Dinomaly's utils.compute_pro (200 thresholds, skimage.measure.label
  regions, FPR < 0.3 rescaled, sklearn.metrics.auc), written out below without its pandas
  DataFrame.append (removed from pandas) and np.bool (removed from numpy); same arithmetic.

Setup (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install numpy scikit-learn scikit-image
    .venv/bin/python scripts/make_metric_fixtures.py
"""
import json
import os
import sys
from statistics import mean

import numpy as np
import sklearn
import skimage
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "metrics")


def versions():
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "scikit-image": skimage.__version__,
    }


def f1_score_max(y_true, score):
    precs, recs, _ = precision_recall_curve(y_true, score)
    f1s = 2 * precs * recs / (precs + recs + 1e-7)
    return float(f1s[:-1].max())


def ranking_case(name, scores, labels, with_curve=False):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.uint8)
    case = {
        "name": name,
        # float32 values written as the doubles they are: they parse back exactly.
        "scores": [float(s) for s in scores],
        "labels": [int(v) for v in labels],
        "auroc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
        "f1_max": f1_score_max(labels, scores),
    }
    if with_curve:
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        case["roc_fpr"] = [float(v) for v in fpr]
        case["roc_tpr"] = [float(v) for v in tpr]
    return case


def compute_pro(masks, amaps, num_th=200):
    """Dinomaly utils.compute_pro."""
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th = amaps.min()
    max_th = amaps.max()
    delta = (max_th - min_th) / num_th
    rows = []
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th] = 0
        binary_amaps[amaps > th] = 1
        pros = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                axes0_ids = region.coords[:, 0]
                axes1_ids = region.coords[:, 1]
                tp_pixels = binary_amap[axes0_ids, axes1_ids].sum()
                pros.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fp_pixels = np.logical_and(inverse_masks, binary_amaps).sum()
        fpr = fp_pixels / inverse_masks.sum()
        rows.append((mean(pros), fpr, th))
    rows = [r for r in rows if r[1] < 0.3]
    fprs = np.array([r[1] for r in rows])
    fprs = fprs / fprs.max()
    return float(auc(fprs, np.array([r[0] for r in rows])))


def blob_masks(rng, n, h, w, n_normal):
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n - n_normal):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            ry, rx = rng.integers(1, 5), rng.integers(1, 5)
            masks[i, max(0, cy - ry):cy + ry, max(0, cx - rx):cx + rx] = 1
        # Two pixels touching only diagonally: one region under 8-connectivity, two under 4.
        masks[i, 0, 0] = 1
        masks[i, 1, 1] = 1
    return masks


def aupro_case(name, masks, amaps):
    amaps = amaps.astype(np.float32)
    n, h, w = masks.shape
    return {
        "name": name,
        "width": w,
        "height": h,
        "images": n,
        "masks": [int(v) for v in masks.ravel()],
        "maps": [float(v) for v in amaps.ravel()],
        "aupro": compute_pro(masks, amaps),
        "num_thresholds": len(np.arange(amaps.min(), amaps.max(), (amaps.max() - amaps.min()) / 200)),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240607)
    cases = []
    n = 60
    cases.append(ranking_case("random", rng.normal(size=n), rng.random(n) < 0.3, with_curve=True))
    n = 300
    labels = rng.random(n) < 0.4
    scores = np.round(rng.random(n) * 6 + labels * 1.5) / 4  # few distinct values: many ties
    cases.append(ranking_case("tied", scores, labels, with_curve=True))
    cases.append(ranking_case("all_tied", np.full(20, 0.25), np.arange(20) % 3 == 0))
    cases.append(ranking_case("perfect", np.arange(30) / 30, np.arange(30) >= 20))
    n = 20000
    labels = rng.random(n) < 0.05
    scores = np.floor((rng.normal(size=n) + labels * 2.0) * 32) / 32
    cases.append(ranking_case("pixels_tied", scores, labels))
    with open(os.path.join(OUT, "ranking.json"), "w") as f:
        json.dump({"versions": versions(), "cases": cases}, f)

    acases = []
    n, h, w = 6, 24, 20
    masks = blob_masks(rng, n, h, w, n_normal=2)
    maps = rng.random((n, h, w)) + masks * rng.random((n, h, w)) * 1.2
    acases.append(aupro_case("random", masks, maps))
    acases.append(aupro_case("tied", masks, np.round(maps * 8) / 8))
    masks = blob_masks(rng, 4, 16, 16, n_normal=1)
    maps = rng.random((4, 16, 16)) * 0.3 + masks * 0.5
    acases.append(aupro_case("separable", masks, maps))
    with open(os.path.join(OUT, "aupro.json"), "w") as f:
        json.dump({"versions": versions(), "cases": acases}, f)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
