"""Samples and Fréchet distance for the best run of every arm and size of an image-diffusion sweep.

Sweep jobs compute only the deterministic held-out loss; this runs once per (arm, size) at the
report: it rebuilds the grid-optimal run's model from its ``config.yaml`` and ``last.ckpt``, draws
``per_class`` samples of every class (DDIM or Euler, ``steps`` steps, fixed noise), and records the
Fréchet distance to the held-out images in the local classifier's features and the class-consistency
accuracy (``src/eval/images.py``). Writes ``samples/<arm>_<axis>_<size>.png`` and ``samples.json``
into the sweep dir and returns the rows for the report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from src.config import build, model_plan
from src.estimators.timesteps import generator
from src.eval.images import class_accuracy, classifier, frechet_distance, save_grid
from src.mup.plan import build_model
from src.runs import CONFIG_FILE, last_checkpoint

log = logging.getLogger("src.eval")


def load_run(run_dir: Path) -> tuple[torch.nn.Module, Any, Any]:
    """(model with the run's last weights, its objective, its data module) from a finished run dir."""
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    data = build(cfg.data, "data")
    data.setup()
    factory, param, plan = model_plan(cfg, data.model_inputs)
    model = build_model(factory, plan, param)
    state = torch.load(last_checkpoint(run_dir), map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), build(cfg.task.objective, "task.objective"), data


@torch.no_grad()
def sample(model: torch.nn.Module, objective: Any, labels: torch.Tensor, seed: int = 0, steps: int = 50) -> torch.Tensor:
    """Conditional samples, one per label, from fixed noise (generator(seed, "samples"))."""
    gen = generator(seed, "samples")
    shape = (len(labels), model.in_channels, model.image_size, model.image_size)
    noise = torch.randn(shape, generator=gen)
    return objective.sample(lambda x, t: model(x, t, labels), noise, gen, steps=steps)


def evaluate_sweep(sweep_dir: str | Path, transfer: dict[str, Any], per_class: int = 10, steps: int = 50,
                   cache_dir: str | Path = ".cache/scaling-lab") -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    (sweep_dir / "samples").mkdir(exist_ok=True)
    rows, net = [], None
    for arm in transfer["arms"]:
        for size, job in sorted(arm.get("best_runs", {}).items(), key=lambda kv: int(kv[0])):
            model, objective, data = load_run(sweep_dir / job)
            if net is None:
                net = classifier(data, cache_dir)
            labels = torch.arange(data.classes).repeat_interleave(per_class)
            images = sample(model, objective, labels, steps=steps)
            name = f"{arm['arm'].replace('/', '-')}_{arm['axis']}_{size}"
            save_grid(images, sweep_dir / "samples" / f"{name}.png", nrow=per_class)
            rows.append({"arm": arm["arm"], "axis": arm["axis"], "size": int(size), "run": job,
                         "frechet_distance": frechet_distance(net, data.val.x, images),
                         "class_accuracy": class_accuracy(net, images, labels), "grid": f"samples/{name}.png"})
            log.info("samples %s: FD %.2f, class accuracy %.2f", name, rows[-1]["frechet_distance"],
                     rows[-1]["class_accuracy"])
    (sweep_dir / "samples.json").write_text(json.dumps(rows, indent=2))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The report section: one row per arm and size, the sample grids below."""
    lines = ["## Samples of each size's best run", "",
             "Fréchet distance to the held-out images in the local classifier's features, and the share of "
             "conditional samples it labels as requested.", "",
             "| arm | axis | size | Fréchet distance | class accuracy |", "|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['axis']} | {r['size']} | {r['frechet_distance']:.2f} | {r['class_accuracy']:.2f} |"
              for r in rows]
    lines.append("")
    lines += [f"![{r['arm']} {r['axis']} {r['size']}]({r['grid']})" for r in rows]
    return "\n".join(lines) + "\n"
