"""The generated set of a fidelity test: model samples in batches, components kept, reproducible."""

import numpy as np
import pytest
import torch

from galhpc.config import config_from_dict
from galhpc.fidelity.sources import sample_model
from galhpc.models import build_model
from galhpc.runtime.errors import DataError


def _model(name, params):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": name, "image_size": 16, "latent_dim": 4, "params": params}})
    return build_model(cfg.model).eval()


def test_sample_model_keeps_components_and_is_reproducible():
    model = _model("astrovader", {"n_clusters": 3, "filters": [8, 8, 4], "kernels": [3, 3, 3]})
    one = sample_model(model, 10, seed=4, batch_size=4, component=2)
    assert one.images.shape == (10, 1, 16, 16) and one.images.dtype == np.float32
    assert (one.component == 2).all()
    mixed = sample_model(model, 30, seed=4, batch_size=8)
    assert set(np.unique(mixed.component)) <= {0, 1, 2} and len(mixed.component) == 30
    np.testing.assert_array_equal(sample_model(model, 30, seed=4, batch_size=8).images, mixed.images)


def test_sample_model_refuses_a_model_that_cannot_generate():
    model = _model("convae", {})
    if model.generative:
        pytest.skip("convae became generative")
    with pytest.raises(DataError, match="not generative"):
        sample_model(model, 2)
