"""Run by tests/test_optional_packages.py with the optional packages blocked: a tiny
train + generate + encode + kernels, then the features that need a blocked package."""

import json
import sys
from pathlib import Path

import numpy as np
import torch

root = Path(sys.argv[1])
report = {}

from galhpc.checkpoint import save_checkpoint  # noqa: E402
from galhpc.config import ModelConfig, RunConfig, TrainConfig, config_from_dict  # noqa: E402
from galhpc.data.sources import Block  # noqa: E402
from galhpc.data.store import StoreWriter  # noqa: E402
from galhpc.models import build_model  # noqa: E402

rng = np.random.default_rng(0)
images = rng.random((96, 16, 16), dtype=np.float32)
with StoreWriter(root / "store.h5", "prep: {image_size: 16}\n", chunk_rows=32) as writer:
    writer.append(Block(images=images, object_id=np.arange(96, dtype=np.int64), labels={}))

from galhpc.train.trainer import train  # noqa: E402

cfg = RunConfig(model=ModelConfig(name="vae", image_size=16, latent_dim=4, params={"filters": [4, 4, 4, 4]}),
                train=TrainConfig(store=str(root / "store.h5"), out_dir=str(root / "run"), epochs=1, batch_size=16,
                                  threads=1, backend="single", device="cpu", precision="bf16"))
report["train_steps"] = train(cfg).steps

torch.manual_seed(0)
av = config_from_dict({"model": {"name": "astrovader", "image_size": 16, "latent_dim": 4,
                                 "params": {"n_clusters": 3, "filters": [4, 4, 4], "kernels": [3, 3, 3]}}})
save_checkpoint(root / "av.pt", {"model_name": "astrovader", "model_state": build_model(av.model).state_dict(),
                                 "config": av.to_yaml()})
from galhpc.inference.encode import encode_from_checkpoint  # noqa: E402
from galhpc.inference.generate import generate_from_checkpoint  # noqa: E402
from galhpc.inference.options import EncodeOptions, GenerateOptions, OutputOptions  # noqa: E402

report["generated"] = generate_from_checkpoint(root / "av.pt", root / "gen.h5",
                                               GenerateOptions(n=64, batch_size=32, dtype="float16", noise_sigma=0.01),
                                               OutputOptions(device="cpu", threads=1)).objects_written
report["encoded"] = encode_from_checkpoint(root / "av.pt", root / "store.h5", root / "enc.h5",
                                           EncodeOptions(batch_size=32),
                                           OutputOptions(device="cpu", threads=1)).objects_written

from galhpc.kernels import convolve_psf, nearest_code  # noqa: E402
from galhpc.kernels.codebook import torch_search  # noqa: E402

x, codebook = torch.randn(200, 8), torch.randn(32, 8)
index, _ = nearest_code(x, codebook)
report["nearest_code_ok"] = bool(torch.equal(index, torch_search(x, codebook, 64)[0]))
report["convolve_psf_shape"] = list(convolve_psf(torch.rand(2, 1, 16, 16), torch.rand(5, 5)).shape)

errors = {}
for name, call in {
    "numba": lambda: nearest_code(x, codebook, backend="numba"),
    "cpp": lambda: nearest_code(x, codebook, backend="cpp"),
    "galsim_psf": lambda: generate_from_checkpoint(root / "av.pt", root / "psf.h5",
                                                   GenerateOptions(n=8, psf="moffat:beta=3,fwhm=0.5"),
                                                   OutputOptions(device="cpu", threads=1)),
    "horovod": lambda: train(RunConfig(model=cfg.model, train=TrainConfig(**{**cfg.train.__dict__, "backend": "horovod",
                                                                              "out_dir": str(root / "h")}))),
}.items():
    try:
        call()
    except Exception as err:  # the message is what is tested
        errors[name] = f"{type(err).__name__}: {err}"
    else:
        errors[name] = "no error"
report["errors"] = errors
report["blocked_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in
                                  {"galsim", "fitsio", "faiss", "statmorph", "submitit", "horovod", "numba",
                                   "matplotlib", "tqdm", "sklearn"} or m == "galhpc._ext")
print("REPORT " + json.dumps(report))
