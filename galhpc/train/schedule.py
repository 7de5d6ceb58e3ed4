"""Loss weights and learning rate over training: the s3VDC schedule (Cao et al. 2020).

Model-agnostic: the schedule only says, for a position (epoch, batch), which KL weight
to use, whether the mixture prior is on (`gmm` weight 0 or 1), and which events happen
after a tick ("init_mixture" at the end of α-training).  A tick is an epoch, or with
`unit: steps` one optimiser step (the trainer then calls `weights(step)` and
`events_after(step)`), so a preset counted in steps behaves the same on 800 objects as on
80,000.  Phases, in ticks:

    α-training   [0, T_α)                       KL weight α, against N(0, I)
    M periods of annealing T_β then static T_s   KL weight β(t)^u + α, then 1 + α;
                                                 β(t) = t / T_β rises from 0 to 1

After the last period the static weight 1 + α continues.  With `enabled: false` the
KL weight is the constant `kl_weight` and the mixture prior (if any) is always on.
"""

from __future__ import annotations

from galhpc.config import ScheduleConfig

INIT_MIXTURE = "init_mixture"
UNITS = ("epochs", "steps")


class Schedule:
    """Weights and events of one run's schedule config."""

    def __init__(self, cfg: ScheduleConfig) -> None:
        if cfg.unit not in UNITS:
            raise ValueError(f"schedule: unit must be one of {UNITS}, got {cfg.unit!r}")
        if cfg.enabled and (cfg.t_alpha < 1 or cfg.t_beta < 1 or cfg.t_static < 0 or cfg.periods < 0):
            raise ValueError(
                f"schedule: need t_alpha >= 1, t_beta >= 1, t_static >= 0, periods >= 0; got "
                f"t_alpha={cfg.t_alpha}, t_beta={cfg.t_beta}, t_static={cfg.t_static}, periods={cfg.periods}"
            )
        self.cfg = cfg

    @property
    def per_step(self) -> bool:
        """True when the phases count optimiser steps (`unit: steps`)."""
        return self.cfg.unit == "steps"

    def steps_needed(self, steps_per_epoch: int) -> int | None:
        """Optimiser steps the s3VDC phases span.

        Parameters
        ----------
        steps_per_epoch : int
            Batches per epoch.

        Returns
        -------
        int or None
            None without a schedule.
        """
        ticks = self.total_epochs
        if ticks is None:
            return None
        return ticks if self.per_step else ticks * steps_per_epoch

    @property
    def total_epochs(self) -> int | None:
        """Ticks (epochs, or steps with `unit: steps`) the s3VDC phases span (None without a schedule)."""
        c = self.cfg
        return c.t_alpha + c.periods * (c.t_beta + c.t_static) if c.enabled else None

    def phase(self, epoch: int) -> tuple[str, int]:
        """The s3VDC phase of a 0-based epoch (or step, with ``unit: steps``).

        Parameters
        ----------
        epoch : int
            The tick, 0-based.

        Returns
        -------
        (str, int)
            Phase name (``constant``, ``alpha``, ``anneal``, ``static``) and ticks since it began.
        """
        c = self.cfg
        if not c.enabled:
            return "constant", epoch
        if epoch < c.t_alpha:
            return "alpha", epoch
        since = epoch - c.t_alpha
        period_length = c.t_beta + c.t_static
        if since >= c.periods * period_length:
            return "static", since - c.periods * period_length + c.t_static
        within = since % period_length
        return ("anneal", within) if within < c.t_beta else ("static", within - c.t_beta)

    def weights(self, epoch: int, batch: int = 0, n_batches: int = 1) -> dict[str, float]:
        """Loss weights at batch `batch` of `n_batches` in `epoch`.

        Parameters
        ----------
        epoch : int
            The tick, 0-based.
        batch : int
            Batch within the tick (the KL weight anneals within an epoch).
        n_batches : int
            Batches per tick.

        Returns
        -------
        dict of str to float
            ``kl`` (the KL weight) and ``gmm`` (0 before the mixture exists, else 1).
        """
        c = self.cfg
        name, since = self.phase(epoch)
        if name == "constant":
            return {"kl": c.kl_weight, "gmm": 1.0}
        if name == "alpha":
            return {"kl": c.alpha, "gmm": 0.0}
        if name == "anneal":
            beta = (since + batch / max(n_batches, 1)) / c.t_beta
            return {"kl": beta**c.exponent + c.alpha, "gmm": 1.0}
        return {"kl": 1.0 + c.alpha, "gmm": 1.0}

    def events_after(self, epoch: int) -> list[str]:
        """Events due once `epoch` (0-based) has finished.

        Parameters
        ----------
        epoch : int
            The tick just finished.

        Returns
        -------
        list of str
            `INIT_MIXTURE` at the end of the alpha phase, else empty.
        """
        if self.cfg.enabled and epoch == self.cfg.t_alpha - 1:
            return [INIT_MIXTURE]
        return []


def kl_warmup(epoch: int, warmup_epochs: int) -> float:
    """KL weight of a linear warm-up: (epoch + 1) / warmup_epochs, at most 1; 1 without warm-up.

    Parameters
    ----------
    epoch : int
        0-based epoch.
    warmup_epochs : int
        Epochs of the warm-up (0: none).

    Returns
    -------
    float
        In (0, 1].
    """
    return min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs else 1.0


def learning_rate(step: int, total_steps: int, lr: float, lr_final: float) -> float:
    """Exponential decay from `lr` at step 0 to `lr_final` at step `total_steps` - 1.

    The data-parallel multiplier (number of ranks, warm-up) is the backend's `lr_scale`.

    Parameters
    ----------
    step : int
        Optimizer step.
    total_steps : int
        Steps of the run.
    lr, lr_final : float
        First and last learning rate (> 0).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        A learning rate <= 0.
    """
    if lr <= 0 or lr_final <= 0:
        raise ValueError(f"learning rates must be positive, got lr={lr}, lr_final={lr_final}")
    progress = min(step / max(total_steps - 1, 1), 1.0)
    return lr * (lr_final / lr) ** progress
