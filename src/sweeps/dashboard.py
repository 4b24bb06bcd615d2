"""Native W&B charts for a sweep's summary run and a coordinate check, and a saved W&B workspace for a
sweep group, defined as code with ``wandb-workspaces``.

    python -m src.sweeps.dashboard outputs/<sweep>                 # writes <sweep>/workspace.json (offline)
    python -m src.sweeps.dashboard outputs/<sweep> --entity me --save   # pushes the workspace (online)

Charts are ``wandb.plot.line_series`` (interactive Vega charts whose data is a W&B table):

- ``transfer/<arm>/<axis>/loss_vs_log2_lr``: the seed-mean sweep metric against log2 η, one line per size
  (diverged points left out);
- ``transfer/<arm>/<axis>/optimum_vs_size``: log2 η* against log2 size with its 95% bootstrap interval
  as two more lines (a size without an interval has none);
- ``coord_check/<arm>/<axis>``: every judged quantity's RMS at the judged step against log2 size.

The workspace filters the project to the sweep's W&B group, groups runs by arm, width and depth, and
holds the summary run's charts plus panels that read each run's top-level config (``arm``, ``width``,
``depth``, ``log2_lr``, ``seed``, set by src/jobs/train.py with ``optimizer_name`` and ``group_lr``)
and summary (``sweep_metric``): the sweep metric against log2 η per run, a parallel-coordinates plot,
the learning curves and the per-group LR curves (``lr-<Optimizer>/<group>``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from src.mup import coord_check as cc


def _log2(values: Iterable[float]) -> list[float]:
    return [math.log2(v) for v in values]


def transfer_charts(wandb, transfer: Mapping[str, Any]) -> dict[str, Any]:
    """key → chart for every arm and axis of a transfer report (src/sweeps/transfer.py)."""
    charts = {}
    for entry in transfer["arms"]:
        key, axis = f"transfer/{entry['arm']}/{entry['axis']}", entry["axis"]
        curves = sorted(entry["curves"].values(), key=lambda c: c["size"])
        finite = [[(x, y) for x, y in zip(c["log2_lrs"], c["losses"]) if math.isfinite(y)] for c in curves]
        kept = [(c, pts) for c, pts in zip(curves, finite) if pts]
        if kept:
            charts[f"{key}/loss_vs_log2_lr"] = wandb.plot.line_series(
                xs=[[x for x, _ in pts] for _, pts in kept], ys=[[y for _, y in pts] for _, pts in kept],
                keys=[f"{axis} {c['size']}" for c, _ in kept], title=f"{entry['arm']}: loss vs log2 lr ({axis})",
                xname="log2 lr")
        optima = {int(s): x for s, x in entry["optimal_log2_lr"].items() if x is not None}
        if optima:
            charts[f"{key}/optimum_vs_size"] = _optimum_chart(wandb, entry, optima)
    return charts


def _optimum_chart(wandb, entry: Mapping[str, Any], optima: Mapping[int, float]):
    """log2 η* per size, and the interval's ends where both are finite (sizes keyed by int in memory,
    by str once read back from transfer.json)."""
    sizes = sorted(optima)
    intervals = {int(s): ci for s, ci in entry["optimal_log2_lr_ci"].items()
                 if ci is not None and all(math.isfinite(v) for v in ci)}
    lines, keys = [[optima[s] for s in sizes]], ["log2 lr*"]
    with_ci = [s for s in sizes if s in intervals]
    for i, name in enumerate(("95% low", "95% high")):
        if with_ci:
            lines.append([intervals[s][i] for s in with_ci])
            keys.append(name)
    xs = [_log2(sizes)] + [_log2(with_ci)] * (len(lines) - 1)
    return wandb.plot.line_series(xs=xs, ys=lines, keys=keys, title=f"{entry['arm']}: log2 lr* vs {entry['axis']}",
                                  xname=f"log2 {entry['axis']}")


def coord_check_charts(wandb, rows: list[dict[str, Any]], judge_step: int) -> dict[str, Any]:
    """key → chart per arm and axis: each judged quantity's seed-mean RMS at ``judge_step`` against size."""
    table: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = {}
    for r in rows:
        if r["step"] == judge_step and r["quantity"] in (*cc.JUDGED, cc.DEPTH_RULE_QUANTITY):
            table.setdefault((r["arm"], r["axis"]), {}).setdefault(r["quantity"], {}).setdefault(r["size"], []).append(
                r["value"])
    charts = {}
    for (arm, axis), quantities in sorted(table.items()):
        names = sorted(quantities)
        sizes = [sorted(quantities[q]) for q in names]
        charts[f"coord_check/{arm}/{axis}"] = wandb.plot.line_series(
            xs=[_log2(s) for s in sizes],
            ys=[[math.log2(max(sum(quantities[q][s]) / len(quantities[q][s]), 1e-30)) for s in ss]
                for q, ss in zip(names, sizes)],
            keys=names, title=f"{arm}: log2 RMS at step {judge_step} vs {axis}", xname=f"log2 {axis}")
    return charts


def log_report_run(spec: Mapping[str, Any], out_dir: Path, group: str, name: str, payload: Mapping[str, Any],
                   config: Mapping[str, Any] | None = None) -> None:
    """One W&B run (job type ``report``) in ``group`` holding ``payload`` (charts, tables, images)."""
    import wandb

    from src.training.loggers import wandb_mode

    run = wandb.init(project=spec["project"], entity=spec.get("entity"), group=group, name=name, job_type="report",
                     dir=str(out_dir), mode=wandb_mode(spec["mode"]), config=dict(config or {}))
    run.log(dict(payload))
    run.finish()


def log_study_report(records: list[Mapping[str, Any]], out_dir: Path, tables: Mapping[str, tuple[list[str], list]],
                     images: list[Path] = ()) -> bool:
    """A study's report run (``<out dir name>-report``) in the W&B group of its runs (the runs in
    ``out_dir``), holding ``tables`` (key → (columns, rows)) and ``images``; with the runs' own W&B
    settings, so nothing is logged when they ran without W&B. True when it logged."""
    spec = next((r["config"]["logger"]["wandb"] for r in records
                 if ((r.get("config") or {}).get("logger") or {}).get("wandb")), None)
    if spec is None:
        return False
    import wandb

    from src.training.loggers import wandb_group

    payload = {key: wandb.Table(columns=columns, data=rows) for key, (columns, rows) in tables.items()}
    payload |= {f"{Path(out_dir).name}/{p.stem}": wandb.Image(str(p)) for p in images}
    log_report_run(spec, out_dir, spec.get("group") or wandb_group(out_dir), f"{Path(out_dir).name}-report", payload)
    return True


LINE_SERIES = "wandb/lineseries/v0"  # the Vega spec wandb.plot.line_series logs with


def workspace(entity: str, project: str, group: str, chart_keys: Iterable[str]):
    """A saved W&B view of one sweep group: the summary run's charts, then every run's loss against
    log2 η, learning curves and per-group LRs, runs grouped by arm."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    charts = [wr.CustomChart(query={"summaryTable": {"tableKey": f"{key}_table"}}, chart_name=LINE_SERIES,
                             chart_fields={"step": "step", "lineKey": "lineKey", "lineVal": "lineVal"},
                             chart_strings={"title": key}) for key in chart_keys]
    runs = [
        wr.ScatterPlot(title="sweep metric vs log2 lr", x=wr.Config("log2_lr"), y=wr.SummaryMetric("sweep_metric")),
        wr.ParallelCoordinatesPlot(columns=[wr.ParallelCoordinatesPlotColumn(metric=m) for m in (
            wr.Config("arm"), wr.Config("width"), wr.Config("depth"), wr.Config("log2_lr"), wr.Config("seed"),
            wr.SummaryMetric("sweep_metric"))], title="arm, size, lr, seed → sweep metric"),
        wr.LinePlot(title="validation loss", x="Step", y=["val/loss"], groupby=wr.Config("arm")),
        wr.LinePlot(title="training loss", x="Step", y=["train/loss"], groupby=wr.Config("arm")),
        wr.LinePlot(title="per-group learning rates", x="Step", metric_regex="^lr-.*"),
    ]
    return ws.Workspace(
        entity=entity, project=project, name=f"sweep {group}",
        sections=[ws.Section(name="Transfer", panels=charts, is_open=True),
                  ws.Section(name="Runs", panels=runs, is_open=True)],
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == group],
                                          groupby=[ws.Config("arm"), ws.Config("width"), ws.Config("depth")]))


def sweep_workspace(sweep_dir: Path, entity: str, project: str, group: str | None = None):
    """The workspace of a sweep dir from its transfer.json; the group defaults to the dir's
    (``wandb_group``, as src/run.py sets it when ``logger.wandb.group`` is null)."""
    import wandb

    from src.training.loggers import wandb_group

    transfer = json.loads((Path(sweep_dir) / "transfer.json").read_text())
    return workspace(entity, project, group or wandb_group(Path(sweep_dir)), transfer_charts(wandb, transfer))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--entity", default="entity")
    parser.add_argument("--project", default="scaling-lab")
    parser.add_argument("--group", default=None, help="the sweep's W&B group (default: the dir's name)")
    parser.add_argument("--save", action="store_true", help="push the workspace to W&B (needs a login)")
    args = parser.parse_args(argv)
    if not (args.sweep_dir / "transfer.json").exists():
        print(f"error: {args.sweep_dir}: no transfer.json (not a finished sweep dir)")
        return 2
    view = sweep_workspace(args.sweep_dir, args.entity, args.project, args.group)
    out = args.sweep_dir / "workspace.json"
    out.write_text(view._to_model().model_dump_json(indent=1))
    print(f"workspace spec: {out}")
    if args.save:
        print(f"saved: {view.save().url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
