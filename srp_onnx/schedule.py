"""The time schedule of the method, written once (srp-algorithm.md, sections 2 and 3).

Everything that simulates the spiking network over time — the onnxruntime runner
(one session call per step), the unrolled graph (one graph for all steps), the
benchmark's PyTorch network run the paper code's way — implements :class:`Simulator`
and is driven by :func:`run`, so the order of the phases lives here and nowhere else:

1. ``start``: every neuron's membrane v = 0.5, no mask;
2. ``tau`` pre-simulation steps: the network runs, outputs unmasked, logits not counted;
3. ``end_presim`` (only when tau > 0), right after step tau's fire and reset: the
   simulator's neuron rule (neuron.RULES); SRP's: every neuron keeps ``mask = [v > 1e-3]``
   and restarts at v = 0.5;
4. ``T`` counted steps: outputs masked; step k = 0..T-1 is handed its index, so the
   simulator records that step's logits (and whatever else its caller asked for).

The numpy oracle in tests/ keeps a loop of its own on purpose: it must stay
independent of this code.
"""

from __future__ import annotations

from typing import Protocol


class Simulator(Protocol):
    def start(self) -> None:
        """Membranes to 0.5, masks off."""

    def step(self, counted: int | None) -> None:
        """One time step of the whole network; ``counted`` is k (0..T-1) after pre-simulation, else None."""

    def end_presim(self) -> None:
        """The neuron rule after the pre-simulation (SRP: mask = [v > 1e-3], v = 0.5)."""


def run(sim: Simulator, tau: int, T: int) -> None:
    """Drive ``sim`` through tau pre-simulation steps, the SRP reset, and T counted steps."""
    sim.start()
    for _ in range(tau):
        sim.step(None)
    if tau > 0:
        sim.end_presim()
    for k in range(T):
        sim.step(k)
