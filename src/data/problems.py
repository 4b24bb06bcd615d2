"""Built-in prompt–response tasks with a checkable answer, for SFT and preference training.

* ``Addition`` (``data=arithmetic``): ``"a+b="`` → the digits of a + b, every a, b < 10^digits.
  Answers are at most digits + 1 tokens: an ELBO over them has few masks to draw.
* ``Sorting`` (``data=sorting``): ``"sort 3 1 4 …:"`` → the same numbers ascending, ``"1 3 4 …"``.
  ``count`` numbers of ``digits`` digits make a response of count·(digits + 1) − 1 tokens (16 one-digit
  numbers: 31, plus EOS), long enough that a one-mask ELBO estimate is noisy (the regime VRPO is for).
  The problems are a fixed seeded sample of ``size`` lists (the same for every run). A better answer
  has more positions right (``score``).

Both split their problems into training and held-out sets by a seeded permutation (``val_size``
held out, never trained on). SFT rows are partly noisy: with probability ``noise`` the completion is
one of the task's typical wrong answers (addition: a + b ± 1, ± 10 or ± 100; sorting: two
neighbours swapped or one number off by one), so the SFT model learns a mix and a preference stage
has something to fix. ``ProblemPreferenceData`` serves preference pairs built from an SFT run's own
samples (``src/eval/sampled_pairs.py``), cached as JSONL.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from src.data.pairs import PREFERENCE_FIELDS, SFT_FIELDS, PairData, read_rows
from src.errors import ConfigError
from src.records import CONFIG_FILE, last_checkpoint

Problem = tuple[int, ...]


class Problems:
    """A task: its problems, their prompts and right answers, typical wrong answers, the check."""

    name = ""

    def problems(self) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, p: Problem) -> str:
        raise NotImplementedError

    def answer(self, p: Problem) -> str:
        raise NotImplementedError

    def parse(self, prompt_text: str) -> Problem:
        raise NotImplementedError

    def wrong(self, p: Problem, rng: np.random.Generator) -> str:
        """A typical wrong answer (never the right one)."""
        raise NotImplementedError

    def miss(self, prompt_text: str, answer: str) -> str:
        """A label for how a wrong answer is wrong (the evaluation counts misses by it)."""
        raise NotImplementedError

    def correct(self, prompt_text: str, answer: str) -> bool:
        return answer.strip() == self.answer(self.parse(prompt_text))

    def score(self, prompt_text: str, answer: str) -> float:
        """How good an answer is, in [0, 1] (1: right); a pair prefers the higher score. Exact match here."""
        return float(self.correct(prompt_text, answer))

    def split(self, val_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
        """(training problems, held-out problems), disjoint, from a seeded permutation."""
        every = self.problems()
        if val_size >= len(every):
            raise ConfigError(f"data.val_size={val_size} leaves no training problems out of {len(every)} "
                              f"({self.name}); raise the task's size or lower val_size")
        order = np.random.default_rng([seed, 11]).permutation(len(every))
        return [every[i] for i in order[val_size:]], [every[i] for i in sorted(order[:val_size])]


class Addition(Problems):
    """``"a+b="`` → ``str(a + b)`` for every a, b < 10^digits."""

    OFFSETS = (-100, -10, -1, 1, 10, 100)

    def __init__(self, digits: int = 2) -> None:
        if digits < 1:
            raise ValueError(f"digits={digits} must be >= 1")
        self.digits, self.name = digits, f"{digits}-digit addition"

    def problems(self) -> list[Problem]:
        top = 10**self.digits
        return [(a, b) for a in range(top) for b in range(top)]

    def prompt(self, p: Problem) -> str:
        return f"{p[0]}+{p[1]}="

    def answer(self, p: Problem) -> str:
        return str(sum(p))

    def parse(self, prompt_text: str) -> Problem:
        a, b = prompt_text.rstrip("=").split("+")
        return int(a), int(b)

    def wrong(self, p: Problem, rng: np.random.Generator) -> str:
        """a + b plus a random offset of ±1, ±10 or ±100 that keeps it non-negative."""
        options = [sum(p) + d for d in self.OFFSETS if sum(p) + d >= 0]
        return str(options[rng.integers(len(options))])

    def miss(self, prompt_text: str, answer: str) -> str:
        """The offset answer − (a + b), or "None" when the answer is not a number."""
        try:
            return str(int(answer.strip()) - sum(self.parse(prompt_text)))
        except ValueError:
            return "None"


class Sorting(Problems):
    """``"sort 47 03 91:"`` → ``"03 47 91"``: ``count`` zero-padded numbers of ``digits`` digits."""

    def __init__(self, count: int = 16, digits: int = 1, size: int = 20_000) -> None:
        if count < 2 or digits < 1 or size < 1:
            raise ValueError(f"count={count}, digits={digits}, size={size}: need count >= 2, digits >= 1, size >= 1")
        self.count, self.digits, self.size = count, digits, size
        self.name = f"sorting {count} {digits}-digit numbers"

    def problems(self) -> list[Problem]:
        rng = np.random.default_rng([self.count, self.digits, 29])  # one problem set for every run
        drawn = rng.integers(0, 10**self.digits, size=(self.size, self.count))
        return list(dict.fromkeys(tuple(int(x) for x in row) for row in drawn))

    def _text(self, numbers: Problem) -> str:
        return " ".join(f"{x:0{self.digits}d}" for x in numbers)

    def prompt(self, p: Problem) -> str:
        return f"sort {self._text(p)}:"

    def answer(self, p: Problem) -> str:
        return self._text(tuple(sorted(p)))

    def parse(self, prompt_text: str) -> Problem:
        return tuple(int(x) for x in prompt_text.removeprefix("sort ").rstrip(":").split())

    def wrong(self, p: Problem, rng: np.random.Generator) -> str:
        """The sorted list with two unequal neighbours swapped, or (all equal) one number off by one."""
        out = sorted(p)
        pairs = [i for i in range(len(out) - 1) if out[i] != out[i + 1]]
        if pairs and rng.random() < 0.5:
            i = pairs[rng.integers(len(pairs))]
            out[i], out[i + 1] = out[i + 1], out[i]
        else:
            i = int(rng.integers(len(out)))
            out[i] = out[i] + 1 if out[i] + 1 < 10**self.digits else out[i] - 1
        return self._text(tuple(out))

    def _wrong_positions(self, prompt_text: str, answer: str) -> int | None:
        """How many positions differ from the sorted list; None for another count or non-numbers."""
        right = sorted(self.parse(prompt_text))
        try:
            mine = [int(x) for x in answer.split()]
        except ValueError:
            return None
        return sum(a != b for a, b in zip(mine, right)) if len(mine) == len(right) else None

    def miss(self, prompt_text: str, answer: str) -> str:
        wrong = self._wrong_positions(prompt_text, answer)
        return "malformed" if wrong is None else f"{wrong} wrong"

    def score(self, prompt_text: str, answer: str) -> float:
        """The share of positions that hold the right number (0 for a malformed answer)."""
        wrong = self._wrong_positions(prompt_text, answer)
        return 0.0 if wrong is None else 1.0 - wrong / self.count


class ProblemSFTData(PairData):
    """SFT rows {prompt, completion} of a built-in task; held-out rows are always correct."""

    fields = SFT_FIELDS

    def __init__(self, problems: Problems, noise: float = 0.3, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise={noise!r} must be in [0, 1)")
        self.problems, self.noise = problems, noise

    def rows(self) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        task = self.problems
        train, val = task.split(self.val_size, self.seed)
        rng = np.random.default_rng([self.seed, 13])
        noisy = rng.random(len(train)) < self.noise
        rows = [{"prompt": task.prompt(p), "completion": task.wrong(p, rng) if bad else task.answer(p)}
                for p, bad in zip(train, noisy)]
        return rows, [{"prompt": task.prompt(p), "completion": task.answer(p)} for p in val], task.name


class ProblemPreferenceData(PairData):
    """Preference pairs {prompt, chosen, rejected} built from an SFT run's own samples on its task.

    Training pairs: for ``prompts`` training problems (the SFT run's split), ``samples`` answers at
    ``temperature``; where their scores (``Problems.score``) differ, chosen = a best one, rejected =
    one with a lower score (both the model's: for addition right over wrong, for sorting more
    positions right over fewer). Held-out pairs: every held-out problem of the SFT run, chosen = the right
    answer, rejected = one of the model's wrong answers (a typical wrong one when it made none), so
    ``val/accuracy`` covers the same problems as the SFT run's. Built once per (run, settings), cached
    as JSONL.
    """

    fields = PREFERENCE_FIELDS

    def __init__(self, sft_run: str, prompts: int = 2048, samples: int = 8, temperature: float = 1.0,
                 cache_dir: str = ".cache/scaling-lab", pairs_seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not sft_run:
            raise ConfigError("data.sft_run is not set: give the run dir of an SFT run (experiment=llada_sft)")
        self.sft_run, self.prompts, self.samples, self.temperature = Path(sft_run), prompts, samples, temperature
        self.cache_dir = Path(cache_dir)
        # the seed of the SFT samples the pairs are built from (None: data.seed, which also orders the
        # batches): a study pins it so that runs of every seed train on one preference set
        self.pairs_seed = self.seed if pairs_seed is None else pairs_seed

    @property
    def problems(self) -> Problems:
        """The SFT run's task, from its config (its weights stay unread)."""
        from src.assemble import instantiate

        return instantiate(_sft_config(self.sft_run).data.problems, "data.problems")

    def cache_path(self) -> Path:
        ckpt = last_checkpoint(self.sft_run)
        if not ckpt.exists():
            raise ConfigError(f"data.sft_run={self.sft_run}: no finished run there (no {ckpt.name})")
        stat = ckpt.stat()
        key = f"{self.sft_run.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.prompts}|{self.samples}|" \
              f"{self.temperature}|{self.pairs_seed}|{self.layout.length}"
        return self.cache_dir / "pairs" / f"{type(self.problems).__name__.lower()}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"

    def rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        path = self.cache_path()
        if not path.exists():  # a step of its own: sample the SFT model (src/eval/sampled_pairs.py)
            from src.eval.sampled_pairs import sampled_pairs

            rows = sampled_pairs(self.sft_run, self.layout, self.prompts, self.samples, self.temperature,
                                 self.pairs_seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, path)
        rows = read_rows(str(path), PREFERENCE_FIELDS + ("split",))
        return [r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "val"], str(path)


def _sft_config(run_dir: str | Path) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.load(Path(run_dir) / CONFIG_FILE)
