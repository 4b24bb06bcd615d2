"""The transfer sweeper (``hydra/sweeper=transfer``): Hydra's basic grid sweeper plus the two economies
a learning-rate transfer sweep needs.

* **Twins run once.** Two jobs whose configs differ only in the parametrization and whose μP plans
  are the same numbers (every arm at the base size; Depth-μP, CompleteP and width-only μP at the base
  depth) train identically. Only the first in launch order runs; after it, each twin's dir gets a
  ``metrics.json`` with its own config, the first job's results and ``twin_of`` (its dir).
* **Seeds where they matter.** With ``extra_seeds``, passes after the grid add those seeds only
  near the optima. Each pass reads the records of exactly the jobs of the passes before it, finds
  each arm, axis and size's grid argmin of the seed-mean curve over every seed those jobs hold, and
  runs the extra seeds that are missing at the grid points within ``around`` grid steps of it. The
  second pass therefore goes where seed 0 put the optimum; when the seed mean moves the argmin to a
  point that has only the grid's seeds, a third pass seeds it and its neighbours, and so on until a
  pass finds nothing missing. Then every size's optimum and its neighbours carry every seed, which
  the bootstrap interval needs (src/sweeps/transfer.py). A job that trains the same as a job of an
  earlier pass is its twin, as within a pass.

Both decisions read only files and configs, so a relaunch into the same sweep dir recomputes them,
and a job whose dir holds a finished record of its config is not launched again. With ``records`` (a ``.jsonl.gz``
path, src/sweeps/archive.py) the sweep first restores the finished jobs archived there and archives
its own after every batch of ``max_batch_size`` jobs: a study that spans sessions commits that file,
and the same command on a fresh clone continues it. Beside it (``<name>.compose.json.gz``) the
sweeper keeps what it derived from each job's composed config — its dir, config hash and training
signature — under a digest of the configs and code that decide them, so a relaunch does not compose
the configs of jobs it already has again (Hydra takes about half a second a job); any change to
``conf/`` or to that code recomposes everything.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from src.assemble import assemble, instantiate, plain
from src.errors import ConfigError
from src.records import METRICS_FILE, RunRecord, config_hash, read_record, result_config, write_record
from src.sweeps import archive
from src.sweeps.collect import points, records
from src.sweeps.transfer import build_curves

log = logging.getLogger("src.sweeps")


def training_signature(cfg: DictConfig) -> str | None:
    """sha256 of what decides a job's training: its result-changing config without the
    parametrization, and the μP plan's numbers (model multipliers, every tensor's optimizer part and
    init/forward/LR/WD/ε multipliers, where its init std comes from, the init gain, zero-inits).
    None when the config cannot be planned (the job itself then records why)."""
    try:
        resolved = plain(cfg)
        numbers = _plan_numbers(cfg, resolved)
    except (ConfigError, ValueError, TypeError):
        return None
    scoped = {k: v for k, v in result_config(resolved).items() if k != "parametrization"}
    return hashlib.sha256(json.dumps([scoped, numbers], sort_keys=True, default=str).encode()).hexdigest()


_PLANS: dict[str, dict[str, Any]] = {}


def _plan_numbers(cfg: DictConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """The plan's numbers, computed once per structure (jobs that differ in LR or seed share a plan)."""
    structure = {k: resolved.get(k) for k in ("model", "parametrization", "optimizer", "data")}
    structure["optimizer"] = {k: v for k, v in structure["optimizer"].items() if k != "lr"}
    key = json.dumps(structure, sort_keys=True, default=str)
    if key not in _PLANS:
        plan = assemble(cfg, instantiate(cfg.data, "data").model_inputs)
        param = plan.param
        from_base = param.width_rule and (plan.width, plan.depth) != (plan.base_width, plan.base_depth)
        _PLANS[key] = {
            "model_kwargs": plan.model_kwargs,
            "init": [plan.base_width, plan.base_depth] if from_base else "own",  # base-size SP std, or the model's
            "zero": [param.zero_readout, sorted(param.zero_init)],
            "init_gain": param.init_gain,
            "rows": [[r.name, r.part, r.init_mult, r.forward_mult, r.lr_mult, r.wd_mult, r.eps_mult]
                     for r in plan.rows],
        }
    return _PLANS[key]


def write_twin(twin_dir: Path, first_dir: Path, config: dict[str, Any], sweep_dir: Path) -> bool:
    """Give a twin job its ``metrics.json``: the first job's results under the twin's own config.
    False when the first job has no record yet (killed) or the twin already has one."""
    done = read_record(first_dir)
    if done is None or (twin_dir / METRICS_FILE).exists():
        return False
    twin_dir.mkdir(parents=True, exist_ok=True)
    plan = {**done.get("plan", {}), "parametrization": (config.get("parametrization") or {}).get("name")}
    write_record(twin_dir, RunRecord(
        status=done["status"], config=config, config_hash=config_hash(config), metrics=done["metrics"],
        sweep_metric=done["sweep_metric"], steps=done["steps"], wall_time_s=0.0, plan=plan,
        error=done.get("error"), twin_of=str(first_dir.relative_to(sweep_dir))))
    return True


def finished_earlier(job_dir: Path, hashed: str) -> bool:
    """Whether ``job_dir`` holds a finished (ok or diverged) record of the config with hash ``hashed``
    (src/run.py skips such a job; here it is not even launched)."""
    record = read_record(job_dir)
    return record is not None and record["status"] in ("ok", "diverged") and record["config_hash"] == hashed


ROOT = Path(__file__).resolve().parents[2]
# what a job's composed config, its hash and its plan depend on
DECIDING = ("conf", "src/resolvers.py", "src/assemble.py", "src/records.py", "src/mup", "src/models", "src/data",
            "src/training/optimizers.py", "src/sweeps/sweeper.py")


def code_digest(root: Path = ROOT) -> str:
    """sha256 of the configs and code in ``DECIDING``."""
    digest = hashlib.sha256()
    for item in DECIDING:
        path = root / item
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file() and f.suffix in (".py", ".yaml"):
                digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


class JobFacts:
    """Per job (by its overrides): its dir relative to the sweep dir, its config hash and its training
    signature, derived once from the composed config and kept in ``path`` (a .json.gz) between runs.

    Entries are kept under ``code`` (the digest of ``DECIDING``; a file written under another digest is
    dropped whole) and keyed by ``salt`` (what else the composition depends on: the multirun's task and
    hydra overrides) and the job's overrides. A config whose result depends on other files — a job that
    starts from another run (``init_from``, whose record hash enters the config hash) or loads a
    published model (``model.path``) — is never kept: its facts are composed afresh every time."""

    def __init__(self, path: Path | None, code: str, salt: str,
                 compose: Callable[[Sequence[str]], tuple[str, DictConfig]]):
        self.path, self.code, self.salt, self.compose = path, code, salt, compose
        self.facts: dict[str, dict[str, Any]] = {}
        self.composed = 0
        if path is not None and path.exists():
            try:
                stored = json.loads(gzip.decompress(path.read_bytes()))
            except (OSError, EOFError, ValueError) as err:
                log.warning("%s: unreadable (%s); composing every job's config", path, err)
                stored = {}
            if stored.get("code") == code:
                self.facts = stored["facts"]

    def __call__(self, job: Sequence[str], twins: bool) -> dict[str, Any]:
        key = hashlib.sha256(json.dumps([self.salt, list(job)]).encode()).hexdigest()
        if key in self.facts and (not twins or "signature" in self.facts[key]):
            return self.facts[key]
        rel, config = self.compose(job)
        self.composed += 1
        facts = {"dir": rel, "config_hash": config_hash(plain(config))}
        if twins:
            facts["signature"] = training_signature(config)
        if not (config.get("init_from") or OmegaConf.select(config, "model.path")):
            self.facts[key] = facts
        return facts

    def save(self) -> None:
        """Write the file atomically (a killed write leaves the previous one)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a new study's records dir
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(gzip.compress(json.dumps({"code": self.code, "facts": self.facts}, sort_keys=True).encode(),
                                      mtime=0))
        os.replace(tmp, self.path)


def _with_seed(job: Sequence[str], seed: int) -> list[str]:
    rest = [o for o in job if o.split("=", 1)[0] != "seed"]
    return [*rest, f"seed={seed}"]


class TransferSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 extra_seeds: Sequence[int] = (), around: int = 1, twins: bool = True,
                 records: str | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.extra_seeds, self.around, self.twins = list(extra_seeds or []), around, twins
        self.records = Path(records) if records else None
        self._first_of: dict[str, Path] = {}  # a training signature -> the dir of the job that runs it

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        jobs = [job for batch in self.split_arguments(overrides, None) for job in batch]
        self.sweep_dir = Path(self.config.hydra.sweep.dir)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        if self.records is not None:
            log.info("restored %d finished jobs from %s", archive.restore(self.records, self.sweep_dir), self.records)
        facts_file = self.records.with_name(self.records.name.replace(".jsonl.gz", ".compose.json.gz")) \
            if self.records is not None else None
        hydra = [o for o in OmegaConf.select(self.config, "hydra.overrides.hydra") or []
                 if not o.startswith("hydra.sweep.dir=")]  # the dir is where, not what: facts are relative to it
        salt = json.dumps([list(OmegaConf.select(self.config, "hydra.overrides.task") or []), hydra])
        self._facts = JobFacts(facts_file, code_digest(), salt, lambda job: self._compose(job))
        returns, done = [self._launch(jobs, 0)], list(jobs)
        while self.extra_seeds and (more := seed_pass(self.sweep_dir, jobs, done, self.extra_seeds, self.around,
                                                      self._dir)):
            log.info("seed pass: %d jobs (seeds %s) near the seed-mean optima", len(more), self.extra_seeds)
            returns.append(self._launch(more, len(done)))
            done += more
        log.info("composed %d job configs for their dirs, hashes and twins (%d jobs in all)", self._facts.composed,
                 len(done))
        return returns

    def _compose(self, job: Sequence[str]) -> tuple[str, DictConfig]:
        """(the job's dir relative to the sweep dir, its task config), as the launcher will make them."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
        job_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / subdir
        with open_dict(config):
            del config["hydra"]
        return str(job_dir.relative_to(self.sweep_dir)), config

    def _dir(self, job: Sequence[str]) -> str:
        """The job's dir relative to the sweep dir (a function of its overrides)."""
        return self._facts(job, self.twins)["dir"]

    def _launch(self, jobs: list[list[str]], first_idx: int) -> Sequence[Any]:
        """Launch every job that is neither a twin of an earlier one nor finished already (a relaunch:
        its dir holds a finished record of the same config, which the job itself would skip after
        starting a process); then write the twins' records."""
        first_of = self._first_of
        run, twins, finished = [], [], 0
        for job in jobs:
            facts = self._facts(job, self.twins)
            job_dir, signature = self.sweep_dir / facts["dir"], facts.get("signature") if self.twins else None
            if signature is not None and signature in first_of:
                twins.append((job_dir, first_of[signature], job))
                continue
            if signature is not None:
                first_of[signature] = job_dir
            if finished_earlier(job_dir, facts["config_hash"]):
                finished += 1
                continue
            run.append(job)
        self._facts.save()
        if twins:
            log.info("%d of %d jobs are twins of another job (same training): run once", len(twins), len(jobs))
        if finished:
            log.info("%d of %d jobs finished earlier (same config): not launched", finished, len(jobs))
        size = self.max_batch_size or len(run) or 1
        results: list[Any] = []
        for start in range(0, len(run), size):
            batch = self.launcher.launch(run[start: start + size], initial_job_idx=first_idx + start)
            for r in batch:
                _ = r.return_value  # re-raises a job's own exception, as the basic sweeper does
            results += batch
            self._write_twins(twins)
        self._write_twins(twins)
        return results

    def _write_twins(self, twins: list[tuple[Path, Path, Sequence[str]]]) -> None:
        """Twins whose first job has finished get their record (their config composed only then); then
        the archive is brought up to date."""
        for twin_dir, first_dir, job in twins:
            if (first_dir / METRICS_FILE).exists() and not (twin_dir / METRICS_FILE).exists():
                write_twin(twin_dir, first_dir, plain(self._compose(job)[1]), self.sweep_dir)
        if self.records is not None:
            archive.export(self.sweep_dir, self.records)


def seed_pass(sweep_dir: Path, grid: list[list[str]], done: list[list[str]], extra_seeds: Sequence[int],
              around: int, dir_of: Callable[[Sequence[str]], str]) -> list[list[str]]:
    """The next seed pass: each of ``extra_seeds`` that the jobs ``done`` lack at a ``grid`` job
    near its arm, axis and size's seed-mean optimum, judged from the records of ``done``'s jobs only
    (``dir_of``: a job's dir relative to ``sweep_dir``)."""
    dirs = {dir_of(job) for job in done}
    pts = [p for p in points(records(sweep_dir))[0] if p["dir"] in dirs]
    near = near_optima(pts, around)
    where: dict[str, set[tuple]] = {}
    for p in pts:  # the base point lies on every axis
        where.setdefault(p["dir"], set()).add((p["arm"], p["axis"], p["size"], p["log2_lr"]))
    out = []
    for job in grid:
        if where.get(dir_of(job), set()) & near:
            for new in (_with_seed(job, s) for s in extra_seeds):
                if dir_of(new) not in dirs:
                    dirs.add(dir_of(new))
                    out.append(new)
    return out


def near_optima(pts: list[dict[str, Any]], around: int) -> set[tuple[str, str, int, float]]:
    """(arm, axis, size, log2 η) of the grid points at most ``around`` grid steps from the grid
    argmin of their curve's seed mean (a size where every point diverged has none)."""
    near = set()
    for (arm, axis), curves in build_curves(pts).items():
        for size, curve in curves.items():
            best = curve.optimum().grid_log2_lr
            if best is None:
                continue
            i = curve.log2_lrs.index(best)
            near |= {(arm, axis, size, x) for x in curve.log2_lrs[max(0, i - around): i + around + 1]}
    return near
