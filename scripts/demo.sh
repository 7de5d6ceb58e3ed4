#!/usr/bin/env bash
# The end-to-end demo on this machine (one rank, CPU): simulate a GalSim training set,
# train AstroVaDEr on it, encode every object into a cluster catalogue, generate synthetic
# galaxies with survey emulation, and write the science report.  Everything lands in
# demo-output/; re-running resumes or skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo-output}
mkdir -p "$OUT"
export GALHPC_PROGRESS=${GALHPC_PROGRESS:-1}

echo "== 1/5 prepare: 3000 simulated bulge+disk galaxies -> $OUT/store.h5"
[ -f "$OUT/store.h5" ] || galhpc-prep --config configs/prep_demo.yaml --out "$OUT/store.h5"
# a held-out set from another seed and other distributions, for the report's truth recovery
[ -f "$OUT/heldout.h5" ] || galhpc-prep --config configs/prep_galsim32_heldout.yaml --out "$OUT/heldout.h5"

echo "== 2/5 train: AstroVaDEr on the s3VDC schedule -> $OUT/train/ckpt.pt"
galhpc-train --config configs/astrovader_demo.yaml --store "$OUT/store.h5" --out "$OUT/train"

echo "== 3/5 encode: latents, cluster labels and probabilities -> $OUT/clusters.h5"
galhpc-encode --checkpoint "$OUT/train/ckpt.pt" --store "$OUT/store.h5" --out "$OUT/clusters.h5" --overwrite

# the model draws galaxies as observed (PSF included), so only the sky noise is added: σ 0.1
# in the store's flux units (% of the flux per pixel), about the median noise_sigma
echo "== 4/5 generate: 2000 synthetic galaxies + sky noise -> $OUT/synth.h5"
galhpc-generate --checkpoint "$OUT/train/ckpt.pt" --n 2000 --out "$OUT/synth.h5" \
  --noise-sigma 0.1 --keep-clean --overwrite

echo "== 5/5 report -> $OUT/report/index.html"
galhpc-report --checkpoint "$OUT/train/ckpt.pt" --clusters "$OUT/clusters.h5" --store "$OUT/store.h5" \
  --synth "$OUT/synth.h5" --holdout-store "$OUT/heldout.h5" --out "$OUT/report"

python3 - "$OUT" <<'PY'
import sys, h5py
out = sys.argv[1]
with h5py.File(f"{out}/clusters.h5") as f:
    print("clusters.h5:", {k: f[k].shape for k in f if isinstance(f[k], h5py.Dataset)})
with h5py.File(f"{out}/synth.h5") as f:
    print("synth.h5:", {k: f[k].shape for k in f if isinstance(f[k], h5py.Dataset)})
PY
echo "Demo done: open $OUT/report/index.html"
