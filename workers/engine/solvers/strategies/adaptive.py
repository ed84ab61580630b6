"""The TF reference's step-size controls for Adam: an adaptive learning rate and adaptive
gradient-norm clipping, driven by the history of mean q and of gradient norms.

Both follow the semantics documented for FixedPointFinder's ``alr_hps`` and ``agnc_hps``
(:class:`~fpf_client.options.AdaptiveLearningRate`, :class:`~fpf_client.options.AdaptiveGradNormClip`).
They hold plain floats: one update per Adam iteration, on the host.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import pairwise

import numpy as np

from fpf_client.options import AdaptiveGradNormClip, AdaptiveLearningRate


class LearningRateSchedule:
    """The learning rate of each step: warm-up, then decrease on a worst-of-window loss and
    increase after a run of strictly falling losses, one change per window."""

    def __init__(self, hps: AdaptiveLearningRate, lr_init: float) -> None:
        self.hps = hps
        self.initial_rate = hps.initial_rate if hps.initial_rate is not None else lr_init
        self.warmup = warmup_rates(self.initial_rate, hps.n_warmup_steps, hps.warmup_scale, hps.warmup_shape)
        self.rate = float(self.warmup[0]) if len(self.warmup) else self.initial_rate
        self.step = 0
        self.last_change = -1
        self.losses: list[float] = []

    def update(self, loss: float) -> float:
        """Record the loss of the step just taken and return the rate for the next one."""
        hps, step = self.hps, self.step
        self.losses.append(float(loss))
        if step <= hps.n_warmup_steps:
            self.rate = float(self.warmup[step]) if step < hps.n_warmup_steps else self.initial_rate
            self.last_change = step
        elif self._may_change(hps.do_decrease_rate, hps.min_steps_per_decrease) and self._worst_of_window(
            hps.min_steps_per_decrease
        ):
            self.rate *= hps.decrease_factor
            self.last_change = step
        elif self._may_change(hps.do_increase_rate, hps.min_steps_per_increase) and self._falling_run(
            hps.min_steps_per_increase
        ):
            self.rate *= hps.increase_factor
            self.last_change = step
        self.step = step + 1
        return self.rate

    def _may_change(self, enabled: bool, window: int) -> bool:
        return enabled and self.step >= self.last_change + window

    def _worst_of_window(self, window: int) -> bool:
        recent = self.losses[-(window + 1) :]
        return all(recent[-1] > earlier for earlier in recent[:-1])

    def _falling_run(self, window: int) -> bool:
        recent = self.losses[-(window + 1) :]
        return all(later < earlier for earlier, later in pairwise(recent))


def warmup_rates(rate: float, n: int, scale: float, shape: str) -> np.ndarray:
    """``n`` rates rising from ``scale * rate`` towards ``rate`` (excluded), linearly, geometrically
    or along a Gaussian flank that reaches ``rate`` at step ``n``."""
    if n == 0:
        return np.zeros(0)
    start = scale * rate
    if shape == "linear":
        return np.linspace(start, rate, n + 1)[:-1]
    if shape == "exp":
        return np.geomspace(start, rate, n + 1)[:-1]
    if scale == 1:
        return np.full(n, rate)
    width = math.sqrt(n**2 / (-2.0 * math.log(scale)))  # so that step 0 gets exactly `start`
    return rate * np.exp(-((np.arange(n) - n) ** 2) / (2.0 * width**2))


class GradNormClip:
    """The clip value of each step: a percentile of the recent gradient norms, capped."""

    def __init__(self, hps: AdaptiveGradNormClip) -> None:
        self.hps = hps
        self.value = hps.init_clip_val if hps.do_adaptive_clipping else hps.max_clip_val
        self.norms: deque[float] = deque(maxlen=hps.sliding_window_len)

    def update(self, grad_norm: float) -> float:
        """Record the (unclipped) gradient norm of the step just taken; return the next clip value."""
        if self.hps.do_adaptive_clipping:
            self.norms.append(float(grad_norm))
            self.value = min(
                float(np.percentile(np.fromiter(self.norms, float), self.hps.percentile)), self.hps.max_clip_val
            )
        return self.value
