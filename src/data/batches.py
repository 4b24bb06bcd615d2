"""Step-indexed training batches, shared by every data module.

Training batch s on rank r is ``draw(np.random.default_rng([seed, s, r]))``: a pure function of
(seed, step, rank). Every model size and arm of a sweep sees the same batches (common random
numbers), and a resumed run continues at its step with no sampler state. Held-out data is a fixed
dataset served in order. Both loaders use a private torch generator: a DataLoader draws a worker
base seed from its generator each time it is iterated, and with the global RNG that draw would
shift dropout masks and break exact resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

Draw = Callable[[np.random.Generator], Any]


class StepBatches(IterableDataset):
    """Endless batches from step ``start_step`` on: batch s is ``draw(default_rng([seed, s, rank]))``."""

    def __init__(self, draw: Draw, seed: int, start_step: int = 0, rank: int = 0) -> None:
        self.draw, self.seed, self.start_step, self.rank = draw, seed, start_step, rank

    def batch(self, step: int) -> Any:
        return self.draw(np.random.default_rng([self.seed, step, self.rank]))

    def __iter__(self) -> Iterator[Any]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def _private_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def train_loader(trainer: Any, draw: Draw, seed: int) -> DataLoader:
    """The training loader of a data module attached to ``trainer`` (None outside a fit): it starts at
    the trainer's global step, restored before this is called on resume, and its rank."""
    start = trainer.global_step if trainer is not None else 0
    rank = trainer.global_rank if trainer is not None else 0
    return DataLoader(StepBatches(draw, seed, start, rank), batch_size=None, generator=_private_generator())


def heldout_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """The held-out set in order."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=_private_generator())


def hash_unit(key: str) -> float:
    """A fixed number in [0, 1) from the SHA-256 of ``key``: items whose value is below a fraction are
    held out, the same items on every machine and run."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
