"""Coordinate check over width and depth: activation sizes after a few large-LR steps on one batch.

For every arm (parametrization) and axis (widths at the base depth, depths at the base width), each
model takes ``steps`` optimizer steps on one fixed batch at a deliberately large constant LR, for
several seeds. After every step it records the RMS of the embedding output, the residual stream after
the first block, after L/2 blocks and after the last block, the final hidden state, the logits, L·RMS(m·F) of the residual
branches (m the branch multiplier, averaged over blocks and branches) and the middle block's inner
pre-activation (e.g. W_up h) — each as a value (``<name>``) and as its change from step 0
(``<name>_delta``) — and that layer's own update at its current input, ‖(W_t − W_0)·x_t‖
(``preact_update``). A quantity's slope is the least-squares slope of log RMS (averaged over seeds)
against log size; an arm passes an axis when every judged quantity has |slope| ≤ ``threshold`` at
``judge_step`` (docs/mup.md, “Coordinate check”).

Judged (docs/mup.md, “Coordinate check”): the embedding, the last block's stream h_L and its change
(what Zheng et al. measure), the final hidden state, the logits and their change, and L·‖Δ(m·F)‖
(flat for every correct depth scheme). The streams after the first block and after L/2 blocks are
recorded, not judged: after one block the stream is h_0 + m·F_1 with m = 1/r_L, which shrinks with L
by design, and the stream after L/2 blocks converges to its depth limit only at rate O(1/L)
(experiments/coord_check/README.md measures both).

Depth rule (docs/mup.md, “Coordinate check”), judged on the depth axis of every arm that has one: the
stream quantities above are flat in L under both depth rules, so they cannot tell k = 1 (Depth-μP,
branch ×α/√r_L) from k ≥ 2 (CompleteP, branch ×α/r_L). What differs is how much a block's inner layer
moves. The plan gives every matrix inside a branch the target ‖ΔW‖_R = r_L^(β−1), β the depth rule's
branch exponent (src/mup/rules.py: a branch scaled by m = r_L^(−β) must move the stream by Θ(1/L)), and
the layer's input x (behind the pre-LN) is Θ(1), so the inner layer's own update at its current input,
``preact_update`` = ‖(W_t − W_0)·x_t‖ (+ its bias's change), scales as L^(β−1): slope 0 for k ≥ 2 (Θ(1),
complete feature learning), −½ for k = 1 (a lazy block). An arm with a depth rule passes the depth axis
only when this slope is within ``tolerance`` of its rule's prediction; for every arm the report names
the rule its slope is consistent with (``depth_rule_measured``: k1, k2 or neither). The total movement
``preact_delta`` = ‖W_t x_t − W_0 x_0‖ = ‖ΔW·x_t + W_0·Δx‖ is recorded and reported, not judged: its
second term carries the movement of the block's input, which is Θ(1) in L under both rules, so its
slope lies between the prediction and 0 (the README measures both). Arms without a depth rule (SP,
width-only μP) have no prediction; their slope is reported only.

The probes are module names given by the config (the model file knows nothing about this check):
``embedding`` (module whose output is the embedding), ``blocks`` (the ModuleList of residual blocks),
``final`` (the module giving the final hidden state), ``branches`` (submodules of a block whose
outputs are its residual branches) and ``preact`` (submodule of a block giving the inner
pre-activation).
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.mup.rules import DEPTH_RULES

JUDGED = ("embedding", "block_last", "block_last_delta", "final", "logits", "logits_delta", "branch_delta")
RECORDED = ("embedding", "block_first", "block_mid", "block_last", "final", "logits", "branch", "preact")
DEPTH_RULE_QUANTITY = "preact_update"  # judged on the depth axis against the arm's depth rule
SHOWN = (*JUDGED, "block_first", "block_mid_delta", "preact_delta", DEPTH_RULE_QUANTITY)


def rms(x: torch.Tensor) -> float:
    return float(x.detach().float().pow(2).mean().sqrt())


class Probe:
    """Forward hooks that keep the outputs of the configured modules of one model."""

    def __init__(self, model: nn.Module, probes: Mapping[str, Any], branch_mult: float) -> None:
        blocks = model.get_submodule(probes["blocks"])
        self.depth, self.branch_mult = len(blocks), branch_mult
        mid = max(0, self.depth // 2 - 1)  # the stream after L/2 blocks: relative depth ½ at every L
        named = {"embedding": model.get_submodule(probes["embedding"]), "block_first": blocks[0],
                 "block_mid": blocks[mid], "block_last": blocks[-1],
                 "final": model.get_submodule(probes["final"]), "logits": model,
                 "preact": blocks[mid].get_submodule(probes["preact"])}
        named |= {f"branch.{i}.{name}": block.get_submodule(name)
                  for i, block in enumerate(blocks) for name in probes["branches"]}
        self.preact_init = copy.deepcopy(named["preact"])  # W_0, to split off the inner layer's own update
        for module in self.preact_init.modules():  # its own map only: not a factory's hooks, as the probe sees it
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        self.outputs: dict[str, torch.Tensor] = {}
        self.initial: dict[str, torch.Tensor] | None = None
        # prepended: a module's own output, before any hook of the model's factory (src.mup.scale_output)
        self.handles = [module.register_forward_hook(self._keep(key), prepend=True) for key, module in named.items()]
        self.handles.append(named["preact"].register_forward_hook(self._keep_update, prepend=True))

    def _keep_update(self, module, args, output):
        """(W_t − W_0)·x_t (+ Δb): the inner layer's own movement at its current input x_t."""
        with torch.no_grad():
            self.outputs["preact_update"] = output.detach() - self.preact_init(*args)

    def _keep(self, key: str) -> Callable:
        def hook(module, args, output):
            output = getattr(output, "logits", output)  # a Hugging Face model returns a ModelOutput
            if not isinstance(output, torch.Tensor):  # a two-stream block (MMDiT) returns (image, condition)
                output = output[0]                    # tokens; a diffusers model an output whose first is .sample
            self.outputs[key] = output.detach().clone()
        return hook

    def measure(self, forward: Callable[[], Any]) -> dict[str, float]:
        """One forward pass; every recorded quantity's RMS and the RMS of its change from the first call."""
        self.outputs = {}
        with torch.no_grad():
            forward()
        if self.initial is None:
            self.initial = self.outputs
        stats = {}
        for key in RECORDED:
            keys = [k for k in self.outputs if k.startswith("branch.")] if key == "branch" else [key]
            scale = self.depth * self.branch_mult if key == "branch" else 1.0
            stats[key] = scale * sum(rms(self.outputs[k]) for k in keys) / len(keys)
            stats[f"{key}_delta"] = scale * sum(rms(self.outputs[k] - self.initial[k]) for k in keys) / len(keys)
        stats["preact_update"] = rms(self.outputs["preact_update"])
        return stats

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def slope(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(size)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-30)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def fit_slopes(rows: list[dict[str, Any]], step: int) -> dict[str, dict[str, dict[str, float]]]:
    """arm → axis → quantity → slope at ``step``: the log-log fit of the RMS's geometric mean over seeds
    (the mean of log RMS, the natural average for a log-log fit and robust to one outlying seed)."""
    means: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["step"] == step:
            means[(r["arm"], r["axis"], r["quantity"], r["size"])].append(r["value"])
    table: dict[tuple, dict[int, float]] = defaultdict(dict)
    for (arm, axis, quantity, size), values in means.items():
        table[(arm, axis, quantity)][size] = math.exp(sum(math.log(max(v, 1e-30)) for v in values) / len(values))
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for (arm, axis, quantity), by_size in table.items():
        sizes = sorted(by_size)
        out[arm][axis][quantity] = slope(sizes, [by_size[s] for s in sizes])
    return {arm: dict(axes) for arm, axes in out.items()}


def predicted_depth_slope(depth_rule: str | None) -> float | None:
    """Predicted slope of log ‖(W_t − W_0)·x_t‖ of a block's inner layer against log L: β − 1, with β the
    branch exponent of ``depth_rule`` (0 for k2, −½ for k1); None without a depth rule."""
    return None if depth_rule is None else float(DEPTH_RULES[depth_rule]) - 1.0


def _predictions() -> dict[str, float]:
    return {rule: predicted_depth_slope(rule) for rule in DEPTH_RULES if rule is not None}


def max_tolerance() -> float:
    """Half the smallest gap between two rules' predictions: below it at most one rule fits a slope."""
    values = sorted(_predictions().values())
    return min(b - a for a, b in zip(values, values[1:])) / 2


def depth_rule_measured(slope_value: float, tolerance: float) -> str:
    """The depth rule whose predicted slope is within ``tolerance`` of ``slope_value``, else ``"neither"``."""
    fits = [rule for rule, predicted in _predictions().items() if abs(slope_value - predicted) <= tolerance]
    return fits[0] if len(fits) == 1 else "neither"


def depth_rules(slopes: Mapping[str, Mapping[str, Mapping[str, float]]], rules: Mapping[str, str | None],
                tolerance: float) -> dict[str, dict[str, Any]]:
    """arm → its depth rule, the predicted and measured depth slope of the inner layer's update, the rule
    that slope is consistent with, and the slope of the total pre-activation movement (reported)."""
    out = {}
    for arm, axes in slopes.items():
        q = axes.get("depth", {})
        if DEPTH_RULE_QUANTITY in q:
            out[arm] = {"depth_rule": rules[arm], "predicted": predicted_depth_slope(rules[arm]),
                        "slope": q[DEPTH_RULE_QUANTITY], "preact_delta": q.get("preact_delta"),
                        "depth_rule_measured": depth_rule_measured(q[DEPTH_RULE_QUANTITY], tolerance)}
    return out


def _passes(arm: str, axis: str, q: Mapping[str, float], threshold: float, depth: Mapping[str, Mapping]) -> bool:
    if not all(abs(q[k]) <= threshold for k in JUDGED if k in q):
        return False
    judged = depth.get(arm, {}) if axis == "depth" else {}
    return judged.get("depth_rule") is None or judged["depth_rule_measured"] == judged["depth_rule"]


def verdicts(slopes: Mapping[str, Mapping[str, Mapping[str, float]]], threshold: float,
             depth: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """``"<arm>/<axis>"`` → pass when every judged quantity has |slope| ≤ threshold and, on the depth axis
    of an arm with a depth rule (``depth``: the output of :func:`depth_rules`), the inner layer's update
    slope is consistent with that rule; else fail."""
    return {f"{arm}/{axis}": "pass" if _passes(arm, axis, q, threshold, depth or {}) else "fail"
            for arm, axes in slopes.items() for axis, q in axes.items()}


def trajectory(loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, probe: Probe,
               steps: int) -> list[dict[str, float]]:
    """Probe values after 0, 1, ..., ``steps`` optimizer steps on the batch ``loss_fn`` uses."""
    stats = [probe.measure(loss_fn)]
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        stats.append(probe.measure(loss_fn))
    return stats


def measure(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor],
            probes: Mapping[str, Any], branch_mult: float, steps: int) -> list[dict[str, float]]:
    """The trajectory of one model under the probes of the configured modules."""
    probe = Probe(model, probes, branch_mult)
    try:
        return trajectory(loss_fn, optimizer, probe, steps)
    finally:
        probe.remove()


def sweep(arms: Sequence[str], widths: Sequence[int], depths: Sequence[int], base: tuple[int, int],
          seeds: Sequence[int], run: Callable[[str, int, int, int], list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Rows (arm, axis, size, seed, step, quantity, value) of ``run(arm, width, depth, seed)`` over the
    width axis at the base depth and the depth axis at the base width."""
    rows = []
    for arm in arms:
        for axis, sizes in (("width", widths), ("depth", depths)):
            for size in sizes:
                width, depth = (size, base[1]) if axis == "width" else (base[0], size)
                for seed in seeds:
                    rows += [{"arm": arm, "axis": axis, "size": size, "seed": seed, "step": step, "quantity": q,
                              "value": v} for step, values in enumerate(run(arm, width, depth, seed))
                             for q, v in values.items()]
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arm", "axis", "size", "seed", "step", "quantity", "value"])
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], steps: Sequence[int], path: Path) -> None:
    """One row of panels per (arm, axis), one panel per step; log-log, one line per quantity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        series[(r["arm"], r["axis"], r["step"], r["quantity"])][r["size"]].append(r["value"])
    panels = sorted({(r["arm"], r["axis"]) for r in rows}, key=lambda p: (p[1], p[0]))
    fig, axes = plt.subplots(len(panels), len(steps), figsize=(3.2 * len(steps), 2.6 * len(panels)),
                             squeeze=False, sharey="row")
    for i, (arm, axis) in enumerate(panels):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            for quantity in SHOWN:
                by_size = series.get((arm, axis, step, quantity))
                if by_size:
                    sizes = sorted(by_size)
                    ax.plot(sizes, [sum(by_size[s]) / len(by_size[s]) for s in sizes], marker="o", ms=3,
                            label=quantity, ls="-" if quantity in JUDGED else "--")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{arm}, {axis}, step {step}", fontsize=9)
            ax.set_xlabel(axis, fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(slopes: Mapping, verdict: Mapping[str, str], judge_step: int, threshold: float,
           depth: Mapping[str, Mapping[str, Any]], tolerance: float) -> str:
    lines = [f"coordinate check: slopes of log RMS vs log size at step {judge_step} (pass: |slope| <= {threshold})"]
    for arm, axes in slopes.items():
        for axis, q in axes.items():
            shown = ", ".join(f"{k} {q[k]:+.2f}" for k in SHOWN if k in q)
            lines.append(f"  {arm:10s} {axis:6s} {verdict[f'{arm}/{axis}']:4s}  {shown}")
    if depth:
        lines.append(f"depth rule: depth slope of {DEPTH_RULE_QUANTITY} vs its rule's prediction "
                     f"(pass: within {tolerance})")
    for arm, d in depth.items():
        predicted = "none" if d["predicted"] is None else f"{d['predicted']:+.2f}"
        lines.append(f"  {arm:10s} rule {d['depth_rule'] or '-':2s}  predicted {predicted:5s}  measured "
                     f"{d['slope']:+.2f} -> {d['depth_rule_measured']:7s}  (preact_delta {d['preact_delta']:+.2f})")
    return "\n".join(lines)


def save(rows: list[dict[str, Any]], judge_step: int, threshold: float, plot_steps: Sequence[int],
         out_dir: Path, rules: Mapping[str, str | None], tolerance: float) -> dict[str, Any]:
    """coord_check.csv, coord_check.png and coord_check.json (slopes, depth rules and verdicts) in ``out_dir``;
    ``rules``: every arm's depth rule."""
    result = judge(rows, judge_step, threshold, rules, tolerance)
    write_csv(rows, out_dir / "coord_check.csv")
    plot(rows, plot_steps, out_dir / "coord_check.png")
    (out_dir / "coord_check.json").write_text(json.dumps(result, indent=2))
    return result


def judge(rows: list[dict[str, Any]], judge_step: int, threshold: float, rules: Mapping[str, str | None],
          tolerance: float | None) -> dict[str, Any]:
    """Slopes at ``judge_step``, the depth rules they are consistent with and a verdict per arm and axis."""
    slopes = fit_slopes(rows, judge_step)
    depth = depth_rules(slopes, rules, tolerance)
    return {"judge_step": judge_step, "threshold": threshold, "judged": list(JUDGED),
            "depth_rule_quantity": DEPTH_RULE_QUANTITY, "preact_tolerance": tolerance,
            "slopes": slopes, "depth_rules": depth, "verdict": verdicts(slopes, threshold, depth)}
