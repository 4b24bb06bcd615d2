"""Pick each optimizer family's LR for the coordinate check: run the base model (where every arm is the
same SP model) for ``judge_step`` steps at a grid of LRs and print the movement of the last block's
stream, of the inner pre-activation and of the logits (geometric means over two seeds).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python experiments/coord_check/calibrate_lr.py \
        coord_check_gpt2_sgd 0.03 0.1 0.3          # an experiment (conf/experiment), then LRs

The rule used in experiments/coord_check/README.md: take the LR whose ‖Δh_L‖ at the base size is
closest to AdamW's at 3e-3 (the check's reference LR), i.e. the same amount of feature movement.
"""

from __future__ import annotations

import math
import sys

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src import resolvers  # noqa: F401 — conf/'s resolvers
from src.assemble import CONF_DIR, compose_option, instantiate
from src.jobs.coord_check import _measure


def calibrate(experiment: str, lrs: list[float], seeds=(0, 1)) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    spec = cfg.coord_check
    data = instantiate(cfg.data, "data")
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    arm = OmegaConf.merge(compose_option("parametrization", "completep"), spec.parametrization,
                          {"base_width": spec.base_width, "base_depth": spec.base_depth})
    for lr in lrs:
        sized = OmegaConf.merge(cfg, {"optimizer": {"lr": lr}})
        stats = [_measure(sized, arm, spec.base_width, spec.base_depth, seed, batch, data.model_inputs)
                 for seed in seeds]
        at = [s[spec.judge_step] for s in stats]
        mean = {k: math.exp(sum(math.log(max(a[k], 1e-30)) for a in at) / len(at)) for k in at[0]}
        print(f"{experiment:32s} lr {lr:8.2e}  dh_L {mean['block_last_delta']:8.3f}  h_L {mean['block_last']:8.3f}"
              f"  preact_delta {mean['preact_delta']:7.3f}  preact_update {mean['preact_update']:7.3f}"
              f"  dlogits {mean['logits_delta']:7.3f}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    calibrate(sys.argv[1], [float(x) for x in sys.argv[2:]])
