"""SegmentationAE: shapes, losses with and without masks, batch independence, and (slow) learning."""

import numpy as np
import pytest
import torch

from galhpc.config import ModelConfig
from galhpc.models import build_model
from galhpc.models.base import StepState
from galhpc.models.segment import SegmentationAE

torch.set_num_threads(1)


def test_interface_shapes_and_columns():
    model = build_model(ModelConfig(name="segae", image_size=16, channels=5, latent_dim=12,
                                    params={"widths": [8, 8, 16], "head_width": 8}))
    assert isinstance(model, SegmentationAE)
    x = torch.rand(3, 5, 16, 16) * 100
    target, recon, logits = model.forward_maps(x)
    assert recon.shape == x.shape and logits.shape == (3, 3, 16, 16)
    enc = model.encode(x)
    assert enc.mu.shape == (3, 12) and enc.logvar is None
    assert model.decode(enc.mu).shape == x.shape
    cols = model.extra_columns(x, enc)
    assert cols["segmentation"].shape == (3, 16, 16) and cols["segmentation"].dtype == torch.uint8
    total = cols["star_pixel_fraction"] + cols["galaxy_pixel_fraction"]
    assert torch.all(total <= 1.0)


def test_mask_loss_only_with_masks_and_weighted_by_schedule():
    model = SegmentationAE(image_size=16, widths=[8, 8], head_width=8)
    x = torch.rand(2, 5, 16, 16)
    plain = model.loss({"image": x}, StepState())
    assert set(plain.terms) == {"recon_mse"}
    masks = torch.randint(0, 3, (2, 16, 16), dtype=torch.uint8)
    full = model.loss({"image": x, "masks": masks}, StepState())
    off = model.loss({"image": x, "masks": masks}, StepState(weights={"seg": 0.0}))
    assert torch.allclose(full.total, full.terms["recon_mse"] + full.terms["mask_ce"])
    assert torch.allclose(off.total, off.terms["recon_mse"])
    full.total.backward()
    assert all(p.grad is not None for p in model.seg_head.parameters())


def test_predictions_do_not_depend_on_the_batch_or_mode():
    model = SegmentationAE(image_size=16, widths=[8, 8], head_width=8)
    x = torch.rand(4, 5, 16, 16)
    with torch.no_grad():
        together = model.forward_maps(x)[2]
        alone = model.forward_maps(x[:1])[2]
        model.eval()
        evaluated = model.forward_maps(x)[2]
    torch.testing.assert_close(together[:1], alone)
    torch.testing.assert_close(together, evaluated)


@pytest.mark.slow
def test_segmentation_learns_on_simulated_fields():
    from starsim_fit import fit_on_simulated

    from galhpc.data.starsim import StarSimOptions
    from galhpc.inference import starsep

    opts = StarSimOptions(neighbour_probability=0.5, mag_max=20.5)
    model, test = fit_on_simulated(lambda: SegmentationAE(image_size=24, widths=[16, 32], head_width=16), opts, 24,
                                   seeds=(5, 6), n=(400, 150), extras=("masks",), epochs=4, lr=2e-3)
    with torch.no_grad():
        predicted = model.segment(torch.as_tensor(test.images)).numpy()
    truth = test.extras["masks"]
    scores = starsep.segmentation_scores(predicted, truth)
    majority = max(np.mean(truth == k) for k in range(3))
    assert scores["pixel_accuracy"] > majority + 0.25
    assert scores["mean_iou"] > 0.55 and min(scores[f"iou_{c}"] for c in starsep.SEGMENT_CLASSES) > 0.3
