"""Exact-match accuracy of a finished masked-LM run's sampled answers on its held-out rows.

Every held-out prompt is answered by the validation sampler (low-confidence remasking, one step per
position after the prompt, EOS padding included) at temperature τ, ``draws`` times; τ = 0 is greedy (one draw suffices), and at τ > 0 draw k
uses generator(seed, "answers", k), so the result is a pure function of the weights, τ, draws and
seed. A hit is the same decoded text as the held-out reference (``completion`` of SFT rows, ``chosen``
of preference rows). On a built-in task the misses are also counted by kind (``Problems.miss``:
addition's offset answer − (a + b), sorting's number of wrong positions).

    python -m src.eval.answers <run dir> [--temperature 1] [--draws 4]

writes ``answers_T<τ>.json`` (accuracy, its binomial standard error, the miss counts) into the run dir.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from src.checkpoints import load_model, parse_run_dir_args
from src.errors import ConfigError
from src.data.pairs import PairData
from src.diffusion.masked import sampled_answers
from src.estimators.timesteps import generator


@torch.no_grad()
def held_out_answers(model: torch.nn.Module, data: Any, temperature: float = 0.0, seed: int = 0,
                     draw: int = 0) -> list[str]:
    """Decoded answers to every held-out prompt of ``data`` (a set-up PairData), one sampler run."""
    field = data.responses[0]
    tensors = data.val.tensors
    prompt_mask = ~(tensors[f"{field}_response"] | tensors[f"{field}_padding"])
    gen = generator(seed, "answers", draw) if temperature else None
    answers = sampled_answers(model, tensors[field], prompt_mask, model.mask_id, gen=gen, temperature=temperature)
    return [data.layout.decode(a.tolist()) for a in answers]


def evaluate(run_dir: str | Path, temperature: float = 0.0, draws: int = 1, seed: int = 0) -> dict[str, Any]:
    """Accuracy over draws × held-out rows, its standard error √(p(1 − p)/N), the mean graded score
    (``Problems.score``; exact match for other data), the misses by kind and each held-out row's hits
    over the draws (``row_hits``, in held-out order: a study can pick HPs on one part of the held-out
    rows and report on the rest)."""
    model, _, data = load_model(run_dir)
    if not isinstance(data, PairData):
        raise ConfigError(f"{run_dir}: not a run on prompt–response rows (data={type(data).__name__}); "
                          "src.eval.answers needs an SFT or preference run")
    field, task = data.responses[0], getattr(data, "problems", None)
    row_hits, misses, score = [0] * len(data.val_rows), Counter(), 0.0
    draws = 1 if temperature == 0 else draws
    for k in range(draws):
        answers = held_out_answers(model, data, temperature, seed, k)
        for i, (row, answer) in enumerate(zip(data.val_rows, answers)):
            score += task.score(row["prompt"], answer) if task else float(answer == row[field])
            if answer == row[field]:
                row_hits[i] += 1
            else:
                misses[task.miss(row["prompt"], answer) if task else "wrong"] += 1
    total = draws * len(data.val_rows)
    p = sum(row_hits) / total
    return {"temperature": temperature, "draws": draws, "seed": seed, "answers": total, "accuracy": p,
            "stderr": math.sqrt(p * (1 - p) / total), "score": score / total,
            "misses": dict(misses.most_common()), "row_hits": row_hits}


def main(argv: list[str]) -> int:
    args = parse_run_dir_args("python -m src.eval.answers", __doc__, argv,
                              temperature=(float, 0.0, "sampling temperature (0: greedy)"),
                              draws=(int, 4, "answers per prompt at temperature > 0"), seed=(int, 0, "sampler seed"))
    try:
        result = evaluate(args.run_dir, args.temperature, args.draws, args.seed)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.run_dir / f"answers_T{args.temperature:g}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"accuracy {result['accuracy']:.3f} ± {result['stderr']:.3f}, score {result['score']:.3f} "
          f"({result['answers']} answers): {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
