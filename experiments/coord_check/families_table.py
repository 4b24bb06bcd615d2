"""The per-family table of experiments/coord_check/README.md from families/<family>.json (families.sh).

    PYTHONPATH=. .venv/bin/python experiments/coord_check/families_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from src import resolvers  # noqa: F401 — conf/'s resolvers
from src.assemble import CONF_DIR

HERE = Path(__file__).parent
FAMILIES = ("adamw", "lion", "sgd", "muon", "muon_kimi", "adafactor", "soap", "shampoo_grafted")
ARMS = ("sp", "mup", "depth_mup", "completep")
EXPECTED_FAILURES = ("sp/width", "sp/depth", "mup/depth")  # what the theory predicts (README, main table)


def _lr(family: str) -> str:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=coord_check_gpt2{'' if family == 'adamw' else '_' + family}"])
    return f"{cfg.optimizer.lr:.2g}"


def _rule(result: dict, arm: str) -> str:
    d = result["depth_rules"][arm]
    return f"{d['slope']:+.2f} → **{d['depth_rule_measured']}** ({d['preact_delta']:+.2f})"


def _verdicts(result: dict, axis: str) -> str:
    return " ".join("P" if result["verdict"][f"{arm}/{axis}"] == "pass" else "F" for arm in ARMS)


def _unexpected(result: dict) -> str:
    """The judged quantities (|slope| > threshold) of every failing arm/axis the theory says should pass."""
    out = []
    for key, verdict in result["verdict"].items():
        arm, axis = key.split("/")
        if verdict == "fail" and key not in EXPECTED_FAILURES:
            q = result["slopes"][arm][axis]
            bad = [f"{k} {q[k]:+.2f}" for k in result["judged"] if abs(q[k]) > result["threshold"]]
            out.append(f"{key}: {', '.join(bad) or 'depth rule'}")
    return "; ".join(out) or "-"


def main() -> None:
    print("| family | check LR | depth_mup (k1, pred −0.50) | completep (k2, pred 0) | mup (no rule) "
          "| width: sp mup dμP cP | depth: sp mup dμP cP | unexpected failures |")
    print("|---|---|---|---|---|---|---|---|")
    for family in FAMILIES:
        path = HERE / "families" / f"{family}.json"
        if path.exists():
            r = json.loads(path.read_text())
            print(f"| {family} | {_lr(family)} | {_rule(r, 'depth_mup')} | {_rule(r, 'completep')} "
                  f"| {_rule(r, 'mup')} | {_verdicts(r, 'width')} | {_verdicts(r, 'depth')} | {_unexpected(r)} |")


if __name__ == "__main__":
    main()
