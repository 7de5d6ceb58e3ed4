"""Pixel segmentation (background / star / galaxy) on held-out GalSim fields: accuracy and IoU.

Trains `SegmentationAE` (residual U-Net autoencoder + hypercolumn head) on simulated
stamps with neighbours and their truth masks, scores held-out stamps simulated with
another seed, and draws example maps.

    python benchmarks/starsep_segmentation.py --out docs/img      # ~10 min on 1 CPU core

Writes <out>/segmentation_examples.png and <out>/segmentation_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from starsim_sets import simulate_set  # benchmarks/starsim_sets.py

from galhpc.data.starsim import StarSimOptions
from galhpc.inference import starsep
from galhpc.models.segment import SegmentationAE
from galhpc.train.arrays import fit_arrays


def simulate(opts: StarSimOptions, size: int, seed: int, n: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, C, size, size) and truth masks (n, size, size) of one simulated set."""
    blocks = simulate_set(opts, size, seed, n, workers)
    return np.concatenate([b.images for b in blocks]), np.concatenate([b.extras["masks"] for b in blocks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmark-output/starsep")
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--neighbour-probability", type=float, default=0.5)
    parser.add_argument("--mag-max", type=float, default=21.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    opts = StarSimOptions(neighbour_probability=args.neighbour_probability, mag_min=17.5, mag_max=args.mag_max)
    x_train, m_train = simulate(opts, args.size, 300, args.n_train, args.workers)
    x_test, m_test = simulate(opts, args.size, 400, args.n_test, args.workers)
    torch.manual_seed(0)
    model = SegmentationAE(image_size=args.size, channels=x_train.shape[1])
    start = time.time()
    fit_arrays(model, x_train, epochs=args.epochs, lr=2e-3, extras={"masks": m_train})
    seconds = time.time() - start
    with torch.no_grad():
        predicted = np.concatenate([model.segment(torch.as_tensor(x_test[i : i + 256])).numpy() for i in range(0, len(x_test), 256)])
    scores = starsep.segmentation_scores(predicted, m_test)
    truth_fractions = {name: float(np.mean(m_test == k)) for k, name in enumerate(starsep.SEGMENT_CLASSES)}
    majority = max(truth_fractions.values())  # accuracy of calling every pixel background
    out = Path(args.out)
    mixed = (m_test == 1).any(axis=(1, 2)) & (m_test == 2).any(axis=(1, 2))
    order = np.argsort(~mixed, kind="stable")  # fields holding both a star and a galaxy first
    starsep.plot_segmentation(x_test[order], m_test[order], predicted[order], out / "segmentation_examples.png")
    result = {"scores": scores, "truth_pixel_fractions": truth_fractions, "majority_class_accuracy": majority, "train_s": round(seconds, 1),
              "setup": {"n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "neighbour_probability": args.neighbour_probability}}
    (out / "segmentation_metrics.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
