"""VRPO preference training of a masked-diffusion LM (LLaDA 1.5; docs/vrpo.md, “VRPO”).

Per pair, the ELBOs B̂ of the chosen and rejected responses under the policy (with gradient) and a
frozen reference (a copy of the starting policy, eval mode, no gradient) are estimated with
n = n_t × n_yt Monte Carlo copies (``src/estimators``), and the loss is DPO's on their differences:

    ŝ = β[(B̂_θ − B̂_ref)(y_w) − (B̂_θ − B̂_ref)(y_l)],   loss = −w log σ(ŝ) + λ · SFT loss of y_w

(w = ``dpo_weight``, 1 by default; w = 0 with λ > 0 is SFT on the chosen responses alone, the ablation
that tells the preference term's effect from the SFT term's.)

``antithetic``: the reference sees the same timesteps and masks as the policy for the same response;
chosen and rejected draws are always independent. Naive DPO is n_t = n_yt = 1 without antithetic
sampling. The ELBOs sum over the response and its terminating EOS; padding EOS is excluded (the SFT
term, LLaDA-style, learns the padding too). All copies of chosen and rejected run as one batched
forward per model (``chunk`` rows at a time, activation checkpointing optional). Dropout must be off:
with it the policy and reference forwards would differ even on the same masks.

Logged: the loss, the score, implicit rewards β(B̂_θ − B̂_ref) of chosen and rejected, their margin and
the preference accuracy 1[ŝ > 0]. Validation uses ``heldout_copies`` fixed antithetic draws per
held-out pair; with ``sample_accuracy`` also the exact-match rate of sampled answers against the
chosen response (for data whose chosen answers are the correct ones, like the arithmetic pairs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from src.diffusion import masked
from src.diffusion.masked import answer_hits
from src.estimators import masks, vrpo
from src.estimators.timesteps import Draw, generator
from src.tasks.base import OptimizerFactory, Task


class PreferenceTask(Task):
    item_name = "pairs"
    metric_goals = {"val/loss": "min", "val/score": "max", "val/preference_accuracy": "max", "val/accuracy": "max"}

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, scheduler: Callable[..., float],
                 steps: int, compile: bool = False, record: Mapping[str, Any] | None = None, *, seed: int = 0, beta: float = 0.2, n_t: int = 8,
                 n_yt: int = 1, antithetic: bool = True, form: str = "l", timesteps: str = "iid",
                 sft_weight: float = 0.0, dpo_weight: float = 1.0, eps: float = 1e-3, chunk: int | None = None,
                 checkpointing: bool = False, heldout_copies: int = 16, sample_accuracy: bool = False) -> None:
        super().__init__(model, optimizer, scheduler, steps, compile, record)
        if dropouts := [n for n, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]:
            raise ValueError(f"VRPO needs dropout off (model.dropout=0): {dropouts[0]} has p > 0, so policy and "
                             "reference would differ on the same masks")
        if not beta > 0 or n_t < 1 or n_yt < 1:
            raise ValueError(f"beta={beta}, n_t={n_t}, n_yt={n_yt}: need beta > 0 and n_t, n_yt >= 1")
        if dpo_weight < 0 or sft_weight < 0 or dpo_weight + sft_weight == 0:
            raise ValueError(f"dpo_weight={dpo_weight}, sft_weight={sft_weight}: need both >= 0, not both 0")
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.seed, self.beta, self.n_t, self.n_yt, self.antithetic = seed, beta, n_t, n_yt, antithetic
        self.form, self.timesteps, self.eps = form, timesteps, eps
        self.sft_weight, self.dpo_weight = sft_weight, dpo_weight
        self.chunk, self.checkpointing = chunk, checkpointing
        self.heldout_copies, self.sample_accuracy = heldout_copies, sample_accuracy

    def train(self, mode: bool = True) -> PreferenceTask:
        super().train(mode)
        self.reference.eval()  # frozen: never in training mode
        return self

    def draws(self, batch: Mapping[str, torch.Tensor]) -> tuple[Draw, Draw]:
        """(policy draw, reference draw) over [chosen; rejected]: fresh per step in training, fixed per
        held-out row in validation (antithetic there, to rank pairs with the least noise)."""
        size, length = batch["chosen"].shape
        if self.training:
            gen = generator(self.seed, self.global_step, self.global_rank, "vrpo")
            return vrpo.pair_draws(self.n_t, self.n_yt, size, length, self.antithetic, gen, self.timesteps)
        rows = [masks.draw(self.heldout_copies, 1, 2, length, generator(self.seed, "heldout", i))
                for i in batch["index"].tolist()]  # per row: its chosen and rejected draws
        fixed = Draw(torch.cat([r.t[:, :1] for r in rows] + [r.t[:, 1:] for r in rows], 1),
                     torch.cat([r.noise[:, :1] for r in rows] + [r.noise[:, 1:] for r in rows], 1))
        return fixed, fixed

    def scores(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ŝ per pair, the implicit rewards β(B̂_θ − B̂_ref) of [chosen; rejected])."""
        return vrpo.pair_scores(self.model, self.reference, batch["chosen"], batch["rejected"],
                                batch["chosen_response"], batch["rejected_response"], self.draws(batch), self.beta,
                                self.model.mask_id, form=self.form, chunk=self.chunk,
                                checkpointing=self.checkpointing)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.dpo_weight != 0):  # w = 0: logged only,
            s, rewards = self.scores(batch)                                           # no backward through it
        loss = vrpo.dpo_loss(s).mean()
        prefix = "train" if self.training else "val"
        if self.training:
            chosen, rejected = rewards.chunk(2)
            self.log_dict({"train/score": s.mean(), "train/reward_chosen": chosen.mean(),
                           "train/reward_rejected": rejected.mean(), "train/reward_margin": (chosen - rejected).mean(),
                           "train/preference_accuracy": (s > 0).float().mean(), "train/dpo_loss": loss})
            loss = self.dpo_weight * loss
            if self.sft_weight:
                gen = generator(self.seed, self.global_step, self.global_rank, "sft")
                tokens = batch["chosen"]
                d = masks.draw(1, 1, len(tokens), tokens.shape[1], gen).to(tokens.device)
                sft = masked.loss(self, tokens, batch["chosen_response"] | batch["chosen_padding"], d,
                                  self.model.mask_id, self.eps)
                loss = loss + self.sft_weight * sft
                self.log("train/sft_loss", sft)
        else:
            self.add_val(f"{prefix}/score", s.sum(), len(s))
            self.add_val(f"{prefix}/preference_accuracy", (s > 0).sum(), len(s))
        return loss, len(s)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self.sample_accuracy:
            hits = answer_hits(self, batch["chosen"], batch["chosen_response"], batch["chosen_padding"],
                               self.trainer.datamodule.layout, self.model.mask_id)
            self.add_val("val/accuracy", hits, len(batch["chosen"]))
