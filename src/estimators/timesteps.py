"""Timestep and noise draws for Monte Carlo diffusion objectives, as replayable objects.

A ``Draw`` holds every random number one loss evaluation uses: the timesteps t and the noise the
forward process needs besides t (Gaussian ε for DDPM and rectified flow; the masked-diffusion code
turns its uniform noise into masks). Losses are deterministic functions of (model, data, draw), so
the same draw can be replayed on another model: a second arm of a sweep, or a frozen reference model
(VRPO's antithetic sampling). Draws come from their own ``torch.Generator`` seeded from
(seed, step, rank, stream) by ``generator``, never from the global RNG, so model init, data order and
diffusion noise are independent streams (common random numbers across sweep arms, exact resume).

Samplers (``kind``), for ``n`` draws per item and a batch of B items:

* ``iid``: t ~ U[0, 1) independently;
* ``stratified``: the n copies of an item cover [0, 1) in n strata, t_i = (π(i) + u_i)/n with a random
  permutation π; with n = 1 the strata run across the batch instead (one t per item, B strata), the
  usual variance reduction for a training batch;
* ``logit_normal``: t = sigmoid(u), u ~ N(mean, std²) (SD3's rectified-flow timesteps).

``discretize(t, T)`` maps continuous t to DDPM's integer steps {0, …, T−1}.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

KINDS = ("iid", "stratified", "logit_normal")


def generator(*keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded by a hash of ``keys`` (numpy's SeedSequence), e.g.
    ``generator(seed, step, rank, "diffusion")``: independent streams for independent purposes."""
    words = [k if isinstance(k, int) else int.from_bytes(k.encode(), "little") % 2**63 for k in keys]
    seed = int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] % 2**63)
    return torch.Generator(device=device).manual_seed(seed)


@dataclass(frozen=True)
class Draw:
    """The random numbers of one loss evaluation: t with shape (copies, batch) in [0, 1), and noise
    with shape (copies, batch, *item shape) or None. Replaying a draw replays the estimate."""

    t: torch.Tensor
    noise: torch.Tensor | None = None

    @property
    def copies(self) -> int:
        return self.t.shape[0]

    def copy(self, i: int) -> Draw:
        """The i-th Monte Carlo copy, shaped (batch,) and (batch, *item shape)."""
        return Draw(self.t[i], None if self.noise is None else self.noise[i])

    def to(self, device: torch.device | str) -> Draw:
        return replace(self, t=self.t.to(device), noise=None if self.noise is None else self.noise.to(device))


@dataclass(frozen=True)
class TimestepSampler:
    kind: str = "iid"
    mean: float = 0.0  # logit_normal: the mean and std of u
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"timesteps={self.kind!r}; choose one of {', '.join(KINDS)}")
        if not self.std > 0:
            raise ValueError(f"logit-normal std={self.std!r} must be positive")

    def sample(self, copies: int, batch: int, gen: torch.Generator) -> torch.Tensor:
        """t of shape (copies, batch) in [0, 1)."""
        if self.kind == "iid":
            return torch.rand(copies, batch, generator=gen, dtype=torch.float64).float()
        if self.kind == "logit_normal":
            u = self.mean + self.std * torch.randn(copies, batch, generator=gen, dtype=torch.float64)
            return torch.sigmoid(u).float()
        if copies == 1:  # strata across the batch
            return _stratified(batch, 1, gen).T
        return _stratified(copies, batch, gen)

    def draw(self, copies: int, batch: int, gen: torch.Generator, noise_shape: tuple[int, ...] | None = None,
             noise: str = "gaussian") -> Draw:
        """t, then (when ``noise_shape`` is given) Gaussian or uniform noise of shape
        (copies, batch, *noise_shape), both from ``gen`` in that order."""
        t = self.sample(copies, batch, gen)
        if noise_shape is None:
            return Draw(t)
        shape = (copies, batch, *noise_shape)
        values = torch.randn(shape, generator=gen) if noise == "gaussian" else torch.rand(shape, generator=gen)
        return Draw(t, values)


def _stratified(n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """(n, batch): for every column, one point in each of the n strata [i/n, (i+1)/n), shuffled."""
    order = torch.argsort(torch.rand(batch, n, generator=gen), dim=1).T.double()
    u = torch.rand(n, batch, generator=gen, dtype=torch.float64)
    return ((order + u) / n).float()


def discretize(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Continuous t ∈ [0, 1) → integer steps ⌊t·T⌋ ∈ {0, …, T−1}; U[0, 1) maps to U{0, …, T−1}."""
    return (t.double() * num_timesteps).long().clamp_(0, num_timesteps - 1)
