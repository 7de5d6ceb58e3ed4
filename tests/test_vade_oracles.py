"""AstroVaDEr's mixture against oracles that are not galhpc: sklearn for γ (the model's and the
catalogue's `gamma` column), numpy for the training KL written out from its formula, and the
s3VDC schedule's weights from the paper's formulas.

The oracles take the model's parameters (π, μ_c, σ_c²) and nothing else of galhpc: a γ computed
with σ for σ², normalised over the batch instead of the clusters, or a KL that never uses the
mixture disagrees with them (scripts/mutate.py plants exactly those bugs).
"""

import h5py
import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

import galhpc.models.vade as vade_module
from galhpc.checkpoint import save_checkpoint
from galhpc.config import ScheduleConfig, config_from_dict
from galhpc.inference.encode import encode_from_checkpoint
from galhpc.inference.options import EncodeOptions, OutputOptions
from galhpc.models.base import StepState
from galhpc.models.vade import AstroVaDEr
from galhpc.train.schedule import INIT_MIXTURE, Schedule

torch.set_num_threads(1)
LOG_2PI = np.log(2 * np.pi)
SMALL = {"n_clusters": 4, "filters": [8, 8, 4], "kernels": [3, 3, 3], "l2": 0.01}


def _set_mixture(model, seed=0):
    """Unequal weights, spread means and variances far from 1 (σ and σ² differ by a lot)."""
    rng = np.random.default_rng(seed)
    k, dim = model.mu_c.shape
    with torch.no_grad():
        model.pi_logits.copy_(torch.tensor(rng.normal(0, 0.8, k)))
        model.mu_c.copy_(torch.tensor(rng.normal(0, 1.5, (k, dim))))
        model.log_var_c.copy_(torch.tensor(rng.uniform(-2.5, 1.0, (k, dim))))


def _mixture_numpy(model):
    pi_logits = model.pi_logits.detach().double().numpy()
    pi = np.exp(pi_logits - pi_logits.max())
    return pi / pi.sum(), model.mu_c.detach().double().numpy(), np.exp(model.log_var_c.detach().double().numpy())


def _sklearn_gmm(pi, mu, var):
    """A diagonal sklearn GaussianMixture with the given parameters set by hand (no fit)."""
    gmm = GaussianMixture(len(pi), covariance_type="diag")
    gmm.weights_, gmm.means_, gmm.covariances_ = pi, mu, var
    gmm.precisions_cholesky_ = 1.0 / np.sqrt(var)
    return gmm


def test_cluster_probs_is_sklearn_predict_proba_of_the_models_mixture():
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 5, **SMALL)
    _set_mixture(model)
    pi, mu, var = _mixture_numpy(model)
    rng = np.random.default_rng(1)
    comp = rng.integers(0, 4, 400)  # points drawn from the mixture, so γ is far from one-hot for many
    z = mu[comp] + np.sqrt(var[comp]) * rng.standard_normal((400, 5)) * 1.5
    expected = _sklearn_gmm(pi, mu, var).predict_proba(z)
    with torch.no_grad():
        got = model.cluster_probs(torch.tensor(z, dtype=torch.float32)).double().numpy()
    assert 0.05 < expected.max(1).mean() < 0.99  # the comparison is not between two one-hot tables
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_catalogue_gamma_column_is_sklearn_predict_proba_of_the_checkpoint_mixture(tmp_path):
    size, n = 16, 256
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    widths = 1.0 + 2.5 * rng.random(n)
    images = (np.exp(-(xx**2 + yy**2)[None] / (2 * widths[:, None, None] ** 2))
              + 0.05 * rng.standard_normal((n, size, size)))
    store = tmp_path / "store.h5"
    with h5py.File(store, "w") as f:
        f["images"] = images.astype(np.float32)
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": "astrovader", "image_size": size, "latent_dim": 4, "params": SMALL}})
    model = AstroVaDEr(size, 1, 4, **SMALL)
    with torch.no_grad():  # a mixture fitted to the model's own embeddings, variances widened unevenly
        model.init_mixture(model.encode(torch.tensor(images[:, None], dtype=torch.float32)).mu.numpy(), seed=0)
        model.log_var_c.add_(torch.linspace(-1.0, 1.5, 4)[:, None])
    ckpt = save_checkpoint(tmp_path / "av.pt", {"model_name": "astrovader", "model_state": model.state_dict(),
                                               "config": cfg.to_yaml()})
    out = tmp_path / "cat.h5"
    encode_from_checkpoint(ckpt, store, out, EncodeOptions(batch_size=64),
                           OutputOptions(shard_size=128, threads=1, device="cpu"))
    with h5py.File(out) as f:
        mu_column, gamma_column, component = f["mu"][()], f["gamma"][()], f["component"][()]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["model_state"]
    logits = state["pi_logits"].double().numpy()
    pi = np.exp(logits - logits.max())
    expected = _sklearn_gmm(pi / pi.sum(), state["mu_c"].double().numpy(),
                            np.exp(state["log_var_c"].double().numpy())).predict_proba(mu_column.astype(np.float64))
    assert len(np.unique(expected.argmax(1))) >= 2
    np.testing.assert_allclose(gamma_column, expected, atol=2e-4)
    assert np.array_equal(component, expected.argmax(1))


def _numpy_vade_kl(mu, logvar, z, pi, mu_c, var_c, lam):
    """Spindler et al. 2020 eq. 11 (VaDE, Jiang et al. 2017) per object, γ from the row-wise
    min-max scaled log p(c, z) (s3VDC): written out in numpy from the formula."""
    log_joint = np.log(pi)[None] - 0.5 * np.sum(
        LOG_2PI + np.log(var_c)[None] + (z[:, None] - mu_c[None]) ** 2 / var_c[None], axis=-1)  # (B, K)
    top, bottom = log_joint.max(1, keepdims=True), log_joint.min(1, keepdims=True)
    scaled = lam * (log_joint - top) / (top - bottom)
    gamma = np.exp(scaled - scaled.max(1, keepdims=True))
    gamma /= gamma.sum(1, keepdims=True)
    var = np.exp(logvar)
    cross = 0.5 * np.sum(np.log(var_c)[None] + (var[:, None] + (mu[:, None] - mu_c[None]) ** 2) / var_c[None], axis=-1)
    kl = (gamma * cross).sum(1) + (gamma * (np.log(gamma) - np.log(pi)[None])).sum(1) - 0.5 * (1 + logvar).sum(1)
    return kl, gamma


def _loss_with_z(model, x, weights, monkeypatch):
    """model.loss on x, with the reparameterised z it drew recorded."""
    drawn = {}
    real = vade_module.reparameterise

    def recording(mu, logvar):
        drawn["z"] = real(mu, logvar)
        return drawn["z"]

    monkeypatch.setattr(vade_module, "reparameterise", recording)
    torch.manual_seed(3)
    out = model.loss({"image": x}, StepState(weights=weights))
    return out, drawn["z"].detach().double().numpy()


def _fixed_batch(model, n=24):
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.random((n, 1, 32, 32)), dtype=torch.float32)
    with torch.no_grad():  # a mixture where the batch lies: γ is neither uniform nor one-hot
        model.init_mixture(model.encode(x).mu.numpy(), seed=0)
        model.log_var_c.add_(torch.linspace(-0.5, 1.0, model.n_clusters)[:, None])
    return x


def test_training_kl_is_eq11_with_rowwise_minmax_gamma_recomputed_in_numpy(monkeypatch):
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 6, gamma_lambda=20.0, **SMALL)
    x = _fixed_batch(model)
    out, z = _loss_with_z(model, x, {"kl": 0.7, "gmm": 1.0}, monkeypatch)
    with torch.no_grad():
        enc = model.encode(x)
    mu, logvar = enc.mu.double().numpy(), enc.logvar.double().numpy()
    pi, mu_c, var_c = _mixture_numpy(model)
    kl, gamma = _numpy_vade_kl(mu, logvar, z, pi, mu_c, var_c, 20.0)
    assert 0.3 < gamma.max(1).mean() < 0.999 and gamma.argmax(1).min() != gamma.argmax(1).max()
    assert out.terms["kl"].item() == pytest.approx(kl.mean(), rel=1e-4)
    # the rest of the objective, also from its formula: BCE on the decoder's probabilities, L2
    p = out.recon.detach().double().numpy().clip(1e-12, 1 - 1e-12)
    xn = x.double().numpy()
    bce = -(xn * np.log(p) + (1 - xn) * np.log(1 - p)).reshape(len(xn), -1).sum(1).mean()
    l2 = 0.01 * sum(float(m.weight.detach().double().pow(2).sum()) for m in model.modules()
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert out.terms["recon"].item() == pytest.approx(bce, rel=1e-4)
    assert out.total.item() == pytest.approx(bce + 0.7 * kl.mean() + l2, rel=1e-4)


def test_training_kl_gradient_reaches_the_mixture_as_the_formula_says(monkeypatch):
    """d KL / d(π logits, μ_c, log σ_c²) against autograd of an independent float64 formula."""
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 6, gamma_lambda=20.0, **SMALL)
    x = _fixed_batch(model, n=16)
    out, z = _loss_with_z(model, x, {"kl": 1.0, "gmm": 1.0}, monkeypatch)
    out.terms["kl"].backward()
    with torch.no_grad():
        enc = model.encode(x)
    mu, logvar, zz = enc.mu.double(), enc.logvar.double(), torch.tensor(z)
    params = [p.detach().double().clone().requires_grad_(True) for p in (model.pi_logits, model.mu_c, model.log_var_c)]
    logits, mu_c, log_var_c = params
    log_pi = logits - torch.logsumexp(logits, 0)
    var_c = log_var_c.exp()
    log_joint = log_pi[None] - 0.5 * (LOG_2PI + log_var_c[None] + (zz[:, None] - mu_c[None]) ** 2 / var_c[None]).sum(-1)
    top, bottom = log_joint.max(1, keepdim=True).values, log_joint.min(1, keepdim=True).values
    log_gamma = torch.log_softmax(20.0 * (log_joint - top) / (top - bottom), dim=1)
    gamma = log_gamma.exp()
    cross = 0.5 * (log_var_c[None] + (logvar.exp()[:, None] + (mu[:, None] - mu_c[None]) ** 2) / var_c[None]).sum(-1)
    kl = (gamma * cross).sum(1) + (gamma * (log_gamma - log_pi[None])).sum(1) - 0.5 * (1 + logvar).sum(1)
    kl.mean().backward()
    for mine, theirs in zip((model.pi_logits, model.mu_c, model.log_var_c), params, strict=False):
        assert mine.grad is not None and torch.count_nonzero(mine.grad) > 0
        np.testing.assert_allclose(mine.grad.double().numpy(), theirs.grad.numpy(), rtol=2e-3, atol=2e-5)


def test_alpha_phase_kl_is_the_unit_gaussian_formula(monkeypatch):
    torch.manual_seed(0)
    model = AstroVaDEr(32, 1, 6, **SMALL)
    x = _fixed_batch(model, n=8)
    out, _ = _loss_with_z(model, x, {"kl": 5e-4, "gmm": 0.0}, monkeypatch)
    with torch.no_grad():
        enc = model.encode(x)
    mu, logvar = enc.mu.double().numpy(), enc.logvar.double().numpy()
    expected = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(1).mean()
    assert out.terms["kl"].item() == pytest.approx(expected, rel=1e-4)


# -- s3VDC schedule (Cao et al. 2020, sec. 3; Spindler et al. 2020 sec. 2.3) ---------------
# γ-training (here α-training, as γ names the responsibilities) for T_α epochs with weight α
# against N(0, I); the GMM initialised from the encoded means once it ends; then M periods of
# T_β annealing epochs with weight β(t)^u + α, β(t) = t / T_β rising per step from 0 to 1, and
# T_s static epochs with the annealing factor held at its end value 1 + α; afterwards 1 + α.

CFG = ScheduleConfig(enabled=True, alpha=0.01, t_alpha=3, t_beta=4, t_static=2, periods=2, exponent=3.0)


def _paper_weight(t: float) -> tuple[float, float]:
    """(KL weight, mixture on) at continuous training time t in epochs, from the formulas."""
    a, ta, tb, ts, m, u = 0.01, 3, 4, 2, 2, 3.0
    if t < ta:
        return a, 0.0
    since = t - ta
    if since >= m * (tb + ts):
        return 1.0 + a, 1.0
    within = since % (tb + ts)
    return (min(within, tb) / tb) ** u + a, 1.0


def test_s3vdc_weights_follow_the_papers_formulas_at_every_step():
    schedule, n_batches = Schedule(CFG), 5
    for epoch in range(3 + 2 * 6 + 3):
        for batch in range(n_batches):
            kl, gmm = _paper_weight(epoch + batch / n_batches)
            got = schedule.weights(epoch, batch, n_batches)
            assert got["gmm"] == gmm, (epoch, batch)
            assert got["kl"] == pytest.approx(kl, rel=1e-12), (epoch, batch)


@pytest.mark.parametrize("epoch, batch, expected", [
    (2, 4, 0.01),                 # last α step
    (3, 0, 0.01),                 # annealing starts at β = 0: weight α
    (5, 0, 0.5**3 + 0.01),        # β = 2/4
    (6, 2, (3.4 / 4) ** 3 + 0.01),  # β = 3.4/4 mid-epoch
    (7, 0, 1.01),                 # static
    (9, 0, 0.01),                 # period 2 restarts at β = 0
    (11, 3, (2.6 / 4) ** 3 + 0.01),  # period 2 annealing
    (13, 3, 1.01), (40, 0, 1.01),  # period 2 static, and after the last period
])
def test_s3vdc_weights_hand_values(epoch, batch, expected):
    assert Schedule(CFG).weights(epoch, batch, 5)["kl"] == pytest.approx(expected, rel=1e-12)


def test_mixture_is_initialised_exactly_once_when_alpha_training_ends():
    schedule = Schedule(CFG)
    assert [e for e in range(30) if schedule.events_after(e)] == [2]
    assert schedule.events_after(2) == [INIT_MIXTURE]
    assert schedule.total_epochs == 3 + 2 * (4 + 2)
