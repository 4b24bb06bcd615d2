"""A run's compute in FLOPs, counted on the run's own steps.

``FlopCount`` counts, with torch's ``FlopCounterMode``, the floating-point operations of the first
training step (forward, backward and update) and of the first validation batch that this process
runs, then scales them to the whole run:

    C = S · A · C_step + V · C_val,  times the number of devices,

with S the optimizer steps taken, A the micro-batches per step (gradient accumulation) and V the
validation rounds run; C_val = the first batch's count × (samples in a round / samples in that
batch), since every operation here is linear in the batch size. Counting a whole round would cost
more than the round (the counter runs Python for every operation). FlopCounterMode counts the operations that dominate a Transformer's cost
(matrix products, convolutions, attention) at 2 FLOPs per multiply-add; elementwise work (norms,
activations, the optimizer's update) is not counted, and attention counts the full T × T score
matrix even when causal. The first step stands for every step because a run's shapes do not change
between steps. torch's table lacks the CPU flash-attention kernel that ``scaled_dot_product_attention``
runs on CPU; ``CPU_ATTENTION`` adds it with torch's own attention formulas.

Why not Lightning's ``measure_flops``: it runs an extra forward and backward, which would draw from
the task's noise generators (timesteps, masks) and change the run. Counting a step that runs anyway
changes nothing but its speed (tested: a run with the counter trains bit-identically).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


aten = torch.ops.aten
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


def _samples(batch: Any) -> int:
    """The batch size: the leading dim of the batch's first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch
    return next(_samples(b) for b in items if isinstance(b, (torch.Tensor, dict, list, tuple)))


class FlopCount(Callback):
    def __init__(self) -> None:
        # "step": C_step, one micro-batch's forward, backward and update; "val": C_val, one validation
        # round (from "val_batch", its first batch)
        self.counted: dict[str, int] = {}
        self._first = self._samples = 0
        self._open: dict[str, FlopCounterMode] = {}

    def _start(self, part: str) -> None:
        if part not in self.counted and part not in self._open:
            self._open[part] = counter()
            self._open[part].__enter__()

    def _stop(self, part: str) -> None:
        if part in self._open:
            mode = self._open.pop(part)
            mode.__exit__(None, None, None)
            self.counted[part] = mode.get_total_flops()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start("step")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop("step")

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int,
                                  *args: Any) -> None:
        if trainer.sanity_checking or "val" in self.counted:
            return
        if batch_idx == 0:
            self._first, self._samples = _samples(batch), 0
            self._start("val_batch")
        self._samples += _samples(batch)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop("val_batch")

    def on_validation_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if "val_batch" in self.counted and "val" not in self.counted and not trainer.sanity_checking:
            self.counted["val"] = round(self.counted["val_batch"] * self._samples / self._first)

    def cost(self, trainer: L.Trainer, rounds: int) -> dict[str, Any]:
        """The record's ``cost``: C and its parts for ``rounds`` validation rounds (the run's
        history, which a resumed run restores). A part this process never ran counts as unknown."""
        steps = trainer.global_step * trainer.accumulate_grad_batches
        step_flops, val_flops = self.counted.get("step"), self.counted.get("val")
        train = None if step_flops is None else steps * step_flops
        val = None if val_flops is None else rounds * val_flops
        if (train is None and steps) or (val is None and rounds):
            total = None
        else:
            total = trainer.world_size * ((train or 0) + (val or 0))
        return {"flops": total, "train_step_flops": step_flops, "val_round_flops": val_flops,
                "devices": trainer.world_size}
