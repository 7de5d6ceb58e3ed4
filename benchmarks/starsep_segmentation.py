"""Pixel segmentation (background / star / galaxy) on held-out GalSim fields: accuracy and IoU.

Trains `SegmentationAE` (residual U-Net autoencoder + hypercolumn head) on simulated
stamps with neighbours and their truth masks, scores held-out stamps simulated with
another seed, and draws example maps.

    python benchmarks/starsep_segmentation.py --out docs/img      # ~10 min on 1 CPU core

Writes <out>/segmentation_examples.png and <out>/segmentation_metrics.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from options import option_parser  # benchmarks/options.py
from starsim_sets import simulate_arrays  # benchmarks/starsim_sets.py

from galhpc.data.starsim import StarSimOptions
from galhpc.inference import starsep
from galhpc.models.segment import SegmentationAE
from galhpc.train.arrays import fit_arrays


def main() -> None:
    args = option_parser(__doc__, out="benchmark-output/starsep", n_train=1500, n_test=500, size=32, epochs=6,
                         neighbour_probability=0.5, mag_max=21.5, threads=1, workers=2).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    opts = StarSimOptions(neighbour_probability=args.neighbour_probability, mag_min=17.5, mag_max=args.mag_max)
    x_train, truth = simulate_arrays(opts, args.size, 300, args.n_train, args.workers)
    x_test, test_truth = simulate_arrays(opts, args.size, 400, args.n_test, args.workers)
    m_train, m_test = truth["masks"], test_truth["masks"]
    torch.manual_seed(0)
    model = SegmentationAE(image_size=args.size, channels=x_train.shape[1])
    start = time.time()
    fit_arrays(model, x_train, epochs=args.epochs, lr=2e-3, extras={"masks": m_train})
    seconds = time.time() - start
    with torch.no_grad():
        predicted = np.concatenate([model.segment(torch.as_tensor(x_test[i : i + 256])).numpy()
                                    for i in range(0, len(x_test), 256)])
    scores = starsep.segmentation_scores(predicted, m_test)
    truth_fractions = {name: float(np.mean(m_test == k)) for k, name in enumerate(starsep.SEGMENT_CLASSES)}
    majority = max(truth_fractions.values())  # accuracy of calling every pixel background
    out = Path(args.out)
    mixed = (m_test == 1).any(axis=(1, 2)) & (m_test == 2).any(axis=(1, 2))
    order = np.argsort(~mixed, kind="stable")  # fields holding both a star and a galaxy first
    starsep.plot_segmentation(x_test[order], m_test[order], predicted[order], out / "segmentation_examples.png")
    result = {"scores": scores, "truth_pixel_fractions": truth_fractions, "majority_class_accuracy": majority,
              "train_s": round(seconds, 1),
              "setup": {"n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs,
                        "neighbour_probability": args.neighbour_probability}}
    (out / "segmentation_metrics.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
