"""The OmegaConf resolvers that ``conf/`` uses: run dirs, Hydra's config subdir, sweep-job dir names,
the sweep values a budget expands to, and the numbers of a published LLaDA checkpoint. Importing this
module registers them; the entry point (``src/run.py``) and anything else that composes ``conf/``
outside it (tests, study scripts) import it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

_claimed: dict[str, str] = {}


def claim_run_dir(resume: str | None, path: str) -> str:
    """The run dir: ``resume`` when resuming, else ``path`` or ``path-1``, ``path-2``, …, whichever is
    free first, created at once so that two runs started in the same second never share a directory.
    Idempotent within a process (Hydra may resolve the key more than once). ``resume=auto`` needs a
    fixed dir (preflight refuses it without ``hydra.run.dir``)."""
    if resume and resume != "auto":
        return resume
    if path not in _claimed:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            candidate = path if i == 0 else f"{path}-{i}"
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _claimed[path] = candidate
            break
    return _claimed[path]


def hydra_subdir(output_dir: str, now: str) -> str:
    """Where Hydra writes its config files: ``.hydra``, or ``.hydra/<now>`` when the dir already has
    one (a resumed run, a relaunched sweep), so an earlier run's files are never rewritten."""
    return f".hydra/{now}" if (Path(output_dir) / ".hydra").exists() else ".hydra"


def job_dirname(override_dirname: str, swept: Any = None, limit: int = 200) -> str:
    """A sweep job's dir, named from its overrides (``sweep.log2_lr:-9+sweep.size:w128-d2+…``) with
    the keys the sweeper sweeps (``swept``: hydra.sweeper.params) first and "/" written %2F. Past ``limit`` characters
    (long fixed overrides, Optuna's float-valued trials) the items that fit are kept and the rest is
    replaced by a hash of the whole name: unique, stable across relaunches and under NAME_MAX."""
    first = {str(k) for k in (swept or {})}
    items = sorted(override_dirname.split("+"), key=lambda item: item.split(":", 1)[0] not in first)
    name = "+".join(items).replace("/", "%2F")  # task/objective:flow, paths:/x: one dir, not nested ones
    if len(name) <= limit:
        return name
    kept = ""
    for item in items:
        if len(kept) + len(item) + 1 > limit - 10:
            break
        kept += item + "+"
    return f"{kept}h{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]


def sweep_values(value: Any) -> str:
    """A list (budget.log2_lrs: [-9, -8]) as the sweeper's comma-separated value string. Budgets hold
    lists, so ``budget.log2_lrs=[-9,-8]`` on a command line is a value, not a sweep of budgets."""
    return ",".join(str(v) for v in _as_list(value))


def size_grid(widths: Any, depths: Any, base_width: int, base_depth: int) -> str:
    """The sizes of a width axis at the base depth plus a depth axis at the base width, as the
    sweeper value ``w64-d2,w128-d2,…,w64-d4,…`` (each size once)."""
    sizes = [(int(w), base_depth) for w in _as_list(widths)] + [(base_width, int(d)) for d in _as_list(depths)]
    return ",".join(f"w{w}-d{d}" for w, d in dict.fromkeys(sizes))


def size_part(size: str, which: str) -> int:
    """Width (``w``) or depth (``d``) of a size written ``w64-d2``."""
    parts = dict((p[0], int(p[1:])) for p in size.split("-"))
    return parts[which]


def llada_hf(path: str, key: str) -> Any:
    """One number (width, depth, head_dim, ...) of a published LLaDA checkpoint's config.json."""
    from src.models.llada_hf import read_config

    return read_config(path)[key]


OmegaConf.register_new_resolver("run_dir", claim_run_dir, replace=True)
OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir, replace=True)
OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
OmegaConf.register_new_resolver("pow2", lambda x, shift=0: 2.0 ** (float(x) + float(shift)), replace=True)
OmegaConf.register_new_resolver("size_grid", size_grid, replace=True)
OmegaConf.register_new_resolver("sweep_values", sweep_values, replace=True)
OmegaConf.register_new_resolver("size_part", size_part, replace=True)
OmegaConf.register_new_resolver("llada_hf", llada_hf, replace=True)
