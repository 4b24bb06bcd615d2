"""The built-in task with a known answer: addition, ``"a+b="`` → the digits of a + b.

Problems are every (a, b) with a, b < 10^digits; ``val_size`` of them (a seeded random subset) are
held out and never trained on. SFT rows are partly noisy: with probability ``noise`` the completion
is a wrong sum (a + b ± 1, ± 10 or ± 100, never negative), so the SFT model learns a mix and a
preference stage has something to fix. ``answer_correct`` is the exact-match check the evaluation uses.
``ArithmeticPreferenceData`` serves preference pairs built from an SFT run's own samples
(``src/eval/sampled_pairs.py``), cached as JSONL.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from src.errors import ConfigError
from src.data.pairs import PREFERENCE_FIELDS, SFT_FIELDS, PairData, read_rows
from src.records import last_checkpoint

OFFSETS = (-100, -10, -1, 1, 10, 100)


def problems(digits: int) -> list[tuple[int, int]]:
    top = 10**digits
    return [(a, b) for a in range(top) for b in range(top)]


def prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def parse(prompt_text: str) -> tuple[int, int]:
    a, b = prompt_text.rstrip("=").split("+")
    return int(a), int(b)


def answer_correct(prompt_text: str, answer: str) -> bool:
    a, b = parse(prompt_text)
    return answer.strip() == str(a + b)


def offset(prompt_text: str, answer: str) -> int | None:
    """answer − (a + b), or None when the prompt is not "a+b=" or the answer not a number."""
    try:
        return int(answer.strip()) - sum(parse(prompt_text))
    except ValueError:
        return None


def wrong_sum(a: int, b: int, rng: np.random.Generator) -> int:
    """a + b plus a random offset of ±1, ±10 or ±100 that keeps it non-negative."""
    options = [a + b + d for d in OFFSETS if a + b + d >= 0]
    return int(options[rng.integers(len(options))])


def split_problems(digits: int, val_size: int, seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(training problems, held-out problems), disjoint, from a seeded permutation."""
    every = problems(digits)
    if val_size >= len(every):
        raise ConfigError(f"data.val_size={val_size} leaves no training problems out of {len(every)} "
                          f"({digits}-digit addition); raise data.digits or lower val_size")
    order = np.random.default_rng([seed, 11]).permutation(len(every))
    return [every[i] for i in order[val_size:]], [every[i] for i in sorted(order[:val_size])]


class ArithmeticSFTData(PairData):
    """SFT rows {prompt, completion} of the addition task; held-out rows are always correct."""

    fields = SFT_FIELDS

    def __init__(self, digits: int = 2, noise: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise={noise!r} must be in [0, 1)")
        self.digits, self.noise = digits, noise

    def rows(self) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        train, val = split_problems(self.digits, self.val_size, self.seed)
        rng = np.random.default_rng([self.seed, 13])
        noisy = rng.random(len(train)) < self.noise
        rows = [{"prompt": prompt(a, b), "completion": str(wrong_sum(a, b, rng) if bad else a + b)}
                for (a, b), bad in zip(train, noisy)]
        return rows, [{"prompt": prompt(a, b), "completion": str(a + b)} for a, b in val], "arithmetic"


class ArithmeticPreferenceData(PairData):
    """Preference pairs {prompt, chosen, rejected} built from an SFT run's own samples.

    Training pairs: for ``prompts`` training problems (the SFT run's split), ``samples`` answers at
    ``temperature``; where some are right and some wrong, chosen = a right one, rejected = a wrong one
    (both the model's). Held-out pairs: every held-out problem of the SFT run, chosen = the right sum,
    rejected = one of the model's wrong answers (a wrong sum when it made none), so ``val/accuracy``
    covers the same problems as the SFT run's. Built once per (run, settings), cached as JSONL.
    """

    fields = PREFERENCE_FIELDS

    def __init__(self, sft_run: str, prompts: int = 2048, samples: int = 8, temperature: float = 1.0,
                 cache_dir: str = ".cache/scaling-lab", **kwargs) -> None:
        super().__init__(**kwargs)
        if not sft_run:
            raise ConfigError("data.sft_run is not set: give the run dir of an SFT run (experiment=llada_sft)")
        self.sft_run, self.prompts, self.samples, self.temperature = Path(sft_run), prompts, samples, temperature
        self.cache_dir = Path(cache_dir)

    def cache_path(self) -> Path:
        ckpt = last_checkpoint(self.sft_run)
        if not ckpt.exists():
            raise ConfigError(f"data.sft_run={self.sft_run}: no finished run there (no {ckpt.name})")
        stat = ckpt.stat()
        key = f"{self.sft_run.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.prompts}|{self.samples}|" \
              f"{self.temperature}|{self.seed}|{self.layout.length}"
        return self.cache_dir / "pairs" / f"arithmetic-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"

    def rows(self) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        path = self.cache_path()
        if not path.exists():  # a step of its own: sample the SFT model (src/eval/sampled_pairs.py)
            from src.eval.sampled_pairs import sampled_pairs

            rows = sampled_pairs(self.sft_run, self.layout, self.prompts, self.samples, self.temperature, self.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, path)
        rows = read_rows(str(path), PREFERENCE_FIELDS + ("split",))
        return [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "val"], str(path)
