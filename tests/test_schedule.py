"""s3VDC schedule weights, events and the learning-rate decay."""

import math

import pytest

from galhpc.config import ScheduleConfig
from galhpc.train.schedule import INIT_MIXTURE, Schedule, learning_rate


def _paper():
    return Schedule(ScheduleConfig(enabled=True))


def test_paper_defaults_span_350_epochs_with_phases_in_order():
    s = _paper()
    assert s.total_epochs == 100 + 5 * (25 + 25)
    assert s.phase(0) == ("alpha", 0) and s.phase(99) == ("alpha", 99)
    assert s.phase(100) == ("anneal", 0) and s.phase(124) == ("anneal", 24)
    assert s.phase(125) == ("static", 0) and s.phase(149) == ("static", 24)
    assert s.phase(150) == ("anneal", 0)
    assert s.phase(349) == ("static", 24) and s.phase(360) == ("static", 35)


def test_weights_follow_alpha_polynomial_annealing_and_static_phases():
    s = _paper()
    alpha, u = 5e-4, 2.0
    assert s.weights(3, 7, 10) == {"kl": alpha, "gmm": 0.0}
    # half-way through the first annealing epoch range: β = (12 + 5/10) / 25
    w = s.weights(112, 5, 10)
    assert w["gmm"] == 1.0 and w["kl"] == pytest.approx((12.5 / 25) ** u + alpha)
    assert s.weights(100, 0, 10)["kl"] == pytest.approx(alpha)
    assert s.weights(130, 3, 10)["kl"] == pytest.approx(1 + alpha)
    # annealing is monotone within a period and restarts in the next one
    ramp = [s.weights(e, b, 4)["kl"] for e in range(100, 125) for b in range(4)]
    assert all(a < b for a, b in zip(ramp, ramp[1:], strict=False)) and ramp[-1] < 1 + alpha
    assert s.weights(150, 0, 4)["kl"] == pytest.approx(alpha)


def test_mixture_init_event_fires_once_after_alpha_training():
    s = Schedule(ScheduleConfig(enabled=True, t_alpha=3, t_beta=2, t_static=1, periods=2))
    assert [e for e in range(s.total_epochs) if s.events_after(e)] == [2]
    assert s.events_after(2) == [INIT_MIXTURE]


def test_disabled_schedule_gives_constant_weight_and_no_events():
    s = Schedule(ScheduleConfig(enabled=False, kl_weight=0.25))
    assert s.total_epochs is None
    assert s.weights(17, 3, 9) == {"kl": 0.25, "gmm": 1.0}
    assert not any(s.events_after(e) for e in range(200))


def test_invalid_phase_lengths_are_refused():
    with pytest.raises(ValueError, match="t_beta"):
        Schedule(ScheduleConfig(enabled=True, t_beta=0))


def test_learning_rate_decays_exponentially_from_lr_to_lr_final():
    rates = [learning_rate(s, 101, 3e-4, 1e-6) for s in range(101)]
    assert rates[0] == pytest.approx(3e-4) and rates[-1] == pytest.approx(1e-6)
    ratios = [b / a for a, b in zip(rates, rates[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx((1e-6 / 3e-4) ** 0.01)
    assert learning_rate(50, 101, 3e-4, 1e-6) == pytest.approx(math.sqrt(3e-4 * 1e-6))


def test_learning_rate_refuses_non_positive_rates():
    with pytest.raises(ValueError, match="positive"):
        learning_rate(0, 10, 0.0, 1e-6)
