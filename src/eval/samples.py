"""Samples, Fréchet distance and class accuracy of a finished image-diffusion run.

``evaluate_run`` rebuilds a run's model from its ``config.yaml`` and ``last.ckpt`` (the EMA weights
when it trained with ``ema_decay``), draws ``per_class`` samples of every class (DDIM or Euler,
``steps`` steps, fixed noise, classifier-free guidance scale ``guidance``: 1 = conditional), writes
the grid and returns the Fréchet distance to the held-out images in the local classifier's features
and the class-consistency accuracy (``src/eval/images.py``), all on one thread (``one_thread``), so
the scores do not depend on the machine's core count. Sweep jobs compute only the held-out
loss; the sweep report calls ``evaluate_sweep`` once per arm and size, for the grid-optimal run.

    python -m src.eval.samples <run dir> [--guidance 1.5] [--steps 50] [--per-class 10]

writes ``samples_cfg<guidance>.png`` and ``.json`` into the run dir.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from src.checkpoints import load_model, parse_run_dir_args
from src.assemble import instantiate
from src.diffusion.gaussian import guided
from src.estimators.timesteps import generator
from src.eval.images import class_accuracy, classifier, frechet_distance, one_thread, save_grid
from src.records import CONFIG_FILE, last_checkpoint

log = logging.getLogger("src.eval")


def load_run(run_dir: Path, checkpoint: Path | None = None) -> tuple[torch.nn.Module, Any, Any]:
    """(model with the run's last weights or ``checkpoint``'s, its objective, its data module)."""
    model, cfg, data = load_model(run_dir, checkpoint)
    return model, instantiate(cfg.task.objective, "task.objective"), data


@torch.no_grad()
def sample(model: torch.nn.Module, objective: Any, labels: torch.Tensor, seed: int = 0, steps: int = 50,
           guidance: float = 1.0) -> torch.Tensor:
    """Samples, one per label, from fixed noise (generator(seed, "samples")); ``guidance`` s ≠ 1 mixes
    in the null-label prediction, ε_u + s (ε_c − ε_u), on the image channels only."""
    gen = generator(seed, "samples")
    shape = (len(labels), model.in_channels, model.image_size, model.image_size)
    noise = torch.randn(shape, generator=gen)
    if guidance == 1.0:
        model_fn = lambda x, t: model(x, t, labels)  # noqa: E731
    else:
        model_fn = guided(model, labels, model.null_label, guidance, guided_channels=model.in_channels)
    return objective.sample(model_fn, noise, gen, steps=steps)


def evaluate_run(run_dir: Path, grid: Path, per_class: int = 10, steps: int = 50, guidance: float = 1.0,
                 cache_dir: str | Path = ".cache/scaling-lab", checkpoint: Path | None = None) -> dict[str, Any]:
    """Sample every class of one run (its last weights, or ``checkpoint``'s), save the grid (one row
    per class) and score the samples with the data's classifier (trained once, then read from ``cache_dir``)."""
    model, objective, data = load_run(run_dir, checkpoint)
    net = classifier(data, cache_dir)
    labels = torch.arange(data.classes).repeat_interleave(per_class)
    with one_thread():
        images = sample(model, objective, labels, steps=steps, guidance=guidance)
        scores = {"frechet_distance": frechet_distance(net, data.val.x, images),
                  "class_accuracy": class_accuracy(net, images, labels), "guidance": guidance, "steps": steps}
    save_grid(images, grid, nrow=per_class)
    return scores


def evaluate_sweep(sweep_dir: str | Path, transfer: dict[str, Any], per_class: int = 10, steps: int = 50,
                   cache_dir: str | Path = ".cache/scaling-lab") -> list[dict[str, Any]]:
    """``evaluate_run`` for the best run of every arm and size; ``samples/<arm>_<axis>_<size>.png`` and
    ``samples.json`` in the sweep dir. A best run without weights (a job restored from the sweep's
    records, src/sweeps/archive.py, which never hold weights) gets a row that says so, not scores."""
    sweep_dir = Path(sweep_dir)
    (sweep_dir / "samples").mkdir(exist_ok=True)
    rows = []
    for arm in transfer["arms"]:
        for size, job in sorted(arm.get("best_runs", {}).items(), key=lambda kv: int(kv[0])):
            row = {"arm": arm["arm"], "axis": arm["axis"], "size": int(size), "run": job}
            if not (sweep_dir / job / CONFIG_FILE).exists() or not last_checkpoint(sweep_dir / job).exists():
                rows.append({**row, "missing": "no weights here: a job restored from the sweep's records"})
                log.warning("samples: %s has no weights here (restored from the sweep's records)", job)
                continue
            name = f"{arm['arm'].replace('/', '-')}_{arm['axis']}_{size}"
            scores = evaluate_run(sweep_dir / job, sweep_dir / "samples" / f"{name}.png", per_class, steps,
                                  cache_dir=cache_dir)
            rows.append({**row, **scores, "grid": f"samples/{name}.png"})
            log.info("samples %s: FD %.2f, class accuracy %.2f", name, scores["frechet_distance"],
                     scores["class_accuracy"])
    (sweep_dir / "samples.json").write_text(json.dumps(rows, indent=2))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The report section: one row per arm and size, the sample grids below."""
    lines = ["## Samples of each size's best run", "",
             "Fréchet distance to the held-out images in the local classifier's features, and the share of "
             "conditional samples it labels as requested.", "",
             "| arm | axis | size | Fréchet distance | class accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['axis']} | {r['size']} | " + (f"– | – ({r['missing']}) |" if "missing" in r else
              f"{r['frechet_distance']:.2f} | {r['class_accuracy']:.2f} |") for r in rows]
    lines.append("")
    lines += [f"![{r['arm']} {r['axis']} {r['size']}]({r['grid']})" for r in rows if "grid" in r]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_run_dir_args("python -m src.eval.samples", __doc__, argv,
                              guidance=(float, 1.0, "classifier-free guidance scale (1: conditional)"),
                              steps=(int, 50, "sampling steps (DDIM or Euler)"),
                              per_class=(int, 10, "samples per class"))
    if not last_checkpoint(args.run_dir).exists():
        print(f"error: {args.run_dir}: no checkpoints/last.ckpt (not a finished run dir)", file=sys.stderr)
        return 2
    cache_dir = OmegaConf.load(args.run_dir / CONFIG_FILE).paths.cache_dir
    out = args.run_dir / f"samples_cfg{args.guidance:g}"
    row = evaluate_run(args.run_dir, out.with_suffix(".png"), per_class=args.per_class, steps=args.steps,
                       guidance=args.guidance, cache_dir=cache_dir)
    out.with_suffix(".json").write_text(json.dumps(row, indent=2))
    print(f"FD {row['frechet_distance']:.2f}, class accuracy {row['class_accuracy']:.2f}: {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(sys.argv[1:]))
