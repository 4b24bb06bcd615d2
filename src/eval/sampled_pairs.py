"""Preference pairs from an SFT run's own samples: the step between SFT and VRPO on a built-in task.

Training pairs: for ``prompts`` training problems (the SFT run's split), ``samples`` answers at
``temperature``; where their scores differ, chosen = the first with the best score, rejected = a random
one with a lower score (both the model's; for addition, right over wrong). Held-out pairs: every
held-out problem of the SFT run, chosen = the right answer, rejected = one of the model's wrong answers (the task's typical wrong answer when it made none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from src.checkpoints import load_model
from src.data.problems import ProblemSFTData
from src.data.pairs import Layout
from src.diffusion.masked import sampled_answers
from src.errors import ConfigError


def sampled_pairs(sft_run: Path, layout: Layout, prompts: int, samples: int, temperature: float, seed: int
                  ) -> list[dict[str, str]]:
    """Rows {prompt, chosen, rejected, split} with split "train" or "val"."""
    model, _, sft = load_model(sft_run)
    if not isinstance(sft, ProblemSFTData):
        raise ConfigError(f"data.sft_run={sft_run}: not an SFT run on a built-in task (data=arithmetic, data=sorting)")
    if sft.layout.length != layout.length:
        raise ConfigError(f"data.max_length={layout.length}, but data.sft_run={sft_run} was trained with "
                          f"max_length={sft.layout.length}: give the same")
    task = sft.problems
    train, val = task.split(sft.val_size, sft.seed)
    pick = np.random.default_rng([seed, 17]).permutation(len(train))[: prompts]
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for split, chosen in (("train", [train[i] for i in sorted(pick)]), ("val", val)):
        texts = [task.prompt(p) for p in chosen for _ in range(samples)]
        encoded = [layout.encode(t, "0") for t in texts]
        tokens = torch.from_numpy(np.stack([e[0] for e in encoded]))
        prompt_mask = torch.from_numpy(np.stack([~(e[1] | e[2]) for e in encoded]))
        answers = [layout.decode(a.tolist()) for a in
                   sampled_answers(model, tokens, prompt_mask, model.mask_id, gen=gen, temperature=temperature)]
        rng = np.random.default_rng([seed, 19, len(rows)])
        for k, p in enumerate(chosen):
            mine, text = answers[k * samples: (k + 1) * samples], task.prompt(p)
            room = layout.length - len(layout.prompt(text)) - 1  # for the answer, before EOS
            fits = [x for x in mine if x.strip() and len(layout.tokenizer.encode(x)) <= room]
            scores = {x: task.score(text, x) for x in fits}
            best = max(scores.values(), default=0.0)
            worse = [x for x in fits if scores[x] < best]
            wrong = [x for x in fits if not task.correct(text, x)]
            if split == "train" and worse:
                chosen = next(x for x in fits if scores[x] == best)
                rows.append({"prompt": text, "chosen": chosen, "rejected": str(rng.choice(worse)), "split": split})
            elif split == "val":
                rejected = str(rng.choice(wrong)) if wrong else task.wrong(p, rng)
                rows.append({"prompt": text, "chosen": task.answer(p), "rejected": rejected, "split": split})
    if not any(r["split"] == "train" for r in rows):
        raise ConfigError(f"data.sft_run={sft_run}: its samples gave no (better, worse) pair; raise "
                          "data.temperature or data.samples")
    return rows
