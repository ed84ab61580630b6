"""The 3-bit flip-flop task of Sussillo & Barak (2013).

Each of ``n_bits`` input channels carries sparse pulses of +1 or -1; the target of a
channel holds the sign of that channel's most recent pulse. Every trial starts with a
pulse on all channels at t = 0, so the target begins at a random corner of the
{-1, +1}^n_bits cube and is never 0. This keeps the task a pure memory of 2^n_bits
states: a trained network needs exactly 8 attractors, not a ninth "no pulse yet" state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlipFlopTask:
    """Generator of flip-flop trials.

    Attributes
    ----------
    n_bits : int
        Number of input channels (and outputs).
    n_time : int
        Time steps per trial.
    p_pulse : float
        Probability that a channel receives a pulse at a given step after t = 0. At 0.1
        (rather than sparser) training sees enough opposite pulses on consecutive steps,
        the transition a network otherwise gets wrong on rare trials.
    """

    n_bits: int = 3
    n_time: int = 64
    p_pulse: float = 0.1

    def sample(self, n_trials: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw trials.

        Parameters
        ----------
        n_trials : int
        generator : torch.Generator
            Source of randomness; the same generator state gives the same trials.

        Returns
        -------
        inputs, targets : Tensor, (n_trials, n_time, n_bits), float32
            Pulses in {-1, 0, +1}, and the held sign of the last pulse in {-1, +1}.
        """
        shape = (n_trials, self.n_time, self.n_bits)
        pulses = torch.rand(shape, generator=generator) < self.p_pulse
        pulses[:, 0, :] = True
        signs = torch.randint(0, 2, shape, generator=generator).float() * 2 - 1
        inputs = torch.where(pulses, signs, torch.zeros(()))
        # The target at step t is the last non-zero input up to t: index of the last pulse, gathered.
        steps = torch.arange(self.n_time).view(1, -1, 1).expand(shape)
        last_pulse = torch.where(pulses, steps, torch.zeros_like(steps)).cummax(dim=1).values
        targets = inputs.gather(1, last_pulse)
        return inputs, targets


def sign_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of (trial, step, bit) entries whose output has the target's sign."""
    return float((torch.sign(outputs) == torch.sign(targets)).float().mean())
