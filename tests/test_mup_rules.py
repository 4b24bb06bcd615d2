"""Every cell of the width–depth paper's tables (docs/mup.md, “Per-optimizer tables”) comes out of rules.rule.

Cells are (exponent of r_n, exponent of r_L). Rows: k ≥ 2 (CompleteP rule) and k = 1 (Depth-μP rule),
for input / hidden / output weights and the hidden bias ("vector" inside a residual branch).
"""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from src.mup.rules import Power, rule

HALF = F(1, 2)
ROLES = {"input": ("input", False), "hidden": ("hidden", True), "output": ("output", False),
         "bias": ("vector", True)}


def P(n=0, L=0) -> Power:
    return Power(F(n), F(L))


# (optimizer row, family, eps kind, relative step) -> {quantity: {role: cell}}; None = not in the table
K2 = {
    ("SGD", "gradient", "none", False): {
        "lr": {"input": P(1), "hidden": P(0, 1), "output": P(1), "bias": P(1, 1)},
        "wd": {"input": P(-1), "hidden": P(0, -1), "output": P(-1), "bias": P(-1, -1)},
    },
    ("AdamW/Lion", "sign", "adam", False): {
        "lr": {"input": P(), "hidden": P(-1), "output": P(), "bias": P()},
        "wd": {"input": P(), "hidden": P(1), "output": P(), "bias": P()},
        "eps": {"input": P(-1), "hidden": P(-1, -1), "output": P(-1), "bias": P(-1, -1)},
    },
    ("Muon/Shampoo", "orthogonal", "base", False): {
        "lr": {"input": P(HALF), "hidden": P(), "output": P(HALF)},
        "wd": {"input": P(-HALF), "hidden": P(), "output": P(-HALF)},
    },
    ("Shampoo", "orthogonal", "shampoo", False): {
        "eps": {"input": P(-1), "hidden": P(0, -2), "output": P(-1)},
    },
    ("Muon-Kimi", "kimi", "none", False): {
        "lr": {"input": P(), "hidden": P(-HALF), "output": P()},
        "wd": {"input": P(), "hidden": P(HALF), "output": P()},
    },
    ("SSO", "spectral", "none", False): {
        "lr": {"input": P(), "hidden": P(), "output": P(1)},
        "wd": {"input": P(), "hidden": P(), "output": P(-1)},
    },
    ("Adafactor absolute", "sign", "adafactor", False): {
        "lr": {"input": P(), "hidden": P(-1), "output": P()},
        "wd": {"input": P(), "hidden": P(1), "output": P()},
        "eps": {"hidden": P(-2, -2)},
    },
    # relative steps (step × RMS(W) ∝ init): η and λ carry the init multiplier, so that ηλ is the
    # absolute form's (torch's decay W ← W(1 − ηλ) is not scaled by RMS(W))
    ("Adafactor relative", "sign", "adafactor", True): {
        "lr": {"input": P(), "hidden": P(-HALF), "output": P()},
        "wd": {"input": P(), "hidden": P(HALF), "output": P()},
        "eps": {"hidden": P(-2, -2)},
    },
}

K1 = {  # only the hidden entries change (paper Tables 9-13)
    ("SGD", "gradient", "none", False): {
        "lr": {"hidden": P(), "bias": P(1)}, "wd": {"hidden": P(0, -HALF)}},
    ("AdamW/Lion", "sign", "adam", False): {
        "lr": {"hidden": P(-1, -HALF), "bias": P(0, -HALF)}, "wd": {"hidden": P(1)},
        "eps": {"hidden": P(-1, -HALF)}},
    ("Muon", "orthogonal", "none", False): {"lr": {"hidden": P(0, -HALF)}, "wd": {"hidden": P()}},
    ("Shampoo", "orthogonal", "shampoo", False): {"eps": {"hidden": P(0, -1)}},
    ("Muon-Kimi", "kimi", "none", False): {"lr": {"hidden": P(-HALF, -HALF)}, "wd": {"hidden": P(HALF)}},
    ("SSO", "spectral", "none", False): {"lr": {"hidden": P(0, -HALF)}, "wd": {"hidden": P()}},
    ("Adafactor", "sign", "adafactor", False): {
        "lr": {"hidden": P(-1, -HALF), "bias": P(0, -HALF)}, "wd": {"hidden": P(1)},
        "eps": {"hidden": P(-2, -1)}},
}


def _cells(table, depth_rule):
    for (row, family, eps_kind, relative), quantities in table.items():
        for quantity, cells in quantities.items():
            for role, expected in cells.items():
                yield pytest.param(depth_rule, family, eps_kind, relative, quantity, role, expected,
                                   id=f"{depth_rule}-{row}-{quantity}-{role}")


@pytest.mark.parametrize("depth_rule, family, eps_kind, relative, quantity, role, expected",
                         [*_cells(K2, "k2"), *_cells(K1, "k1")])
def test_table_cell(depth_rule, family, eps_kind, relative, quantity, role, expected):
    label, in_branch = ROLES[role]
    got = getattr(rule(label, in_branch, family, depth_rule, eps_kind, relative), quantity)
    if eps_kind == "adafactor" and quantity == "eps":
        got = got[0]  # the table's ε₁ (of a factored matrix); Adafactor's ε₂ follows the init
    assert got == expected, f"{quantity} of {role}: got {got}, table says {expected}"


@pytest.mark.parametrize("depth_rule, branch", [("k2", P(0, -1)), ("k1", P(0, -HALF)), (None, P())])
def test_common_multipliers_and_init(depth_rule, branch):
    """Multiplier α / α·branch / α/r_n and init variance σ² / σ²/r_n / σ² for every optimizer."""
    for family in ("gradient", "sign", "orthogonal", "kimi", "spectral"):
        get = lambda role: rule(*ROLES[role], family, depth_rule)  # noqa: E731
        assert [get(r).forward for r in ("input", "hidden", "output", "bias")] == [P(), branch, P(-1), branch]
        assert [get(r).init for r in ("input", "hidden", "output", "bias")] == [P(), P(-HALF), P(), P()]


def test_width_only_mup_has_no_depth_exponents():
    for family in ("gradient", "sign", "orthogonal", "kimi", "spectral"):
        for label, in_branch in ROLES.values():
            r = rule(label, in_branch, family, None, "adam")
            assert all(p.L == 0 for p in (r.init, r.forward, r.lr, r.wd, r.eps))


def test_finite_parameters_are_never_scaled():
    for family in ("gradient", "sign", "orthogonal", "kimi", "spectral"):
        for depth_rule in (None, "k1", "k2"):
            r = rule("finite", True, family, depth_rule, "adam")
            assert (r.init, r.forward, r.lr, r.wd, r.eps) == (P(), P(), P(), P(), P())


def test_power_value_and_text():
    p = Power(F(-1), F(HALF))
    assert p.value(4.0, 4.0) == pytest.approx(0.5)
    assert str(p) == "r_n^-1·r_L^1/2" and str(Power()) == "1"
    with pytest.raises(ValueError, match="unknown role"):
        rule("readout", False, "sign", None)
