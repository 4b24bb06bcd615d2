"""The spectral recipe: (role, r_n, r_L, depth rule, optimizer family) → init, LR, WD and ε multipliers.

Notation (docs/mup.md, “The spectral recipe”): r_n = n/n_base, r_L = L/L_base, ‖·‖_R the RMS→RMS operator norm,
e_in, e_out ∈ {0, 1} whether a parameter's fan-in / fan-out grows with width. Every multiplier is a
monomial r_n^a · r_L^b, kept as exact exponents so the paper's tables can be checked cell by cell.

1. Forward multiplier m of a parameter (what its output is scaled by on the way to the residual
   stream or the logits): the readout's α_out/r_n; a residual branch's α/r_L^β (β = 1 for branches of
   k ≥ 2 linear maps, CompleteP; β = ½ for k = 1, Depth-μP; β = 0 without a depth rule); 1 otherwise.
2. Target update ‖ΔW‖_R = c/m: every parameter should move the residual stream (or the logits) by
   c = Θ(1), and each of the L branches by c = Θ(1/r_L) because their updates add coherently.
3. Raw direction A of the optimizer (ΔW = −η(A + λW)), from the gradient G = m·δxᵀ with δ entries of
   size n^(−e_out) and Θ(1) inputs x, so ‖G‖_2 = m·n^((e_in−e_out)/2):
       gradient (SGD)      ‖A‖_R = m · n^(e_in − e_out)
       sign (Adam, Lion)   ‖A‖_R = n^e_in                       (rank-1 with Θ(1) entries)
       orthogonal (Muon)   ‖A‖_R = n^((e_in − e_out)/2)          (UVᵀ)
       kimi (Muon ×0.2√max(A,B))  ‖A‖_R = n^(max(e_in,e_out)/2 + (e_in−e_out)/2)
       spectral (SSO)      ‖A‖_R = 1
4. LR = target / ‖A‖_R;  WD λ ∝ ‖A‖_R / ‖W‖_R (‖W‖_R = n for the readout, whose init is constant and
   whose forward multiplier is 1/r_n; 1 otherwise);  ε ∝ the size of what ε is added to or compared
   with: the gradient's entries m·n^(−e_out) (Adam), ‖G‖_2² (Shampoo), and for torch's Adafactor
   the pair (ε₁, ε₂) below.
5. Init std (relative to the base std): n_in^(−½)·min(1, √(n_out/n_in)) (Yang–Simon–Bernstein), with the
   readout's 1/n moved into its forward multiplier: input 1, hidden r_n^(−½), readout 1, vectors 1.
   No depth factor: the branch multiplier carries depth.

Vectors (biases, norm gains, tables) are fan-in-1 parameters (e_in = 0, e_out = 1); ``finite``
parameters have no growing dim. The caller passes the family of the update a parameter actually gets
(Muon and SOAP hand vectors to an Adam: sign-like; Shampoo preconditions them itself).

torch's Adafactor (relative steps): the step is multiplied by max(ε₂, RMS(W)) and RMS(W) ∝ init std,
so its LR is divided by the init multiplier and ε₂, a floor on RMS(W), is multiplied by it; its weight
decay W ← W(1 − ηλ) is not scaled by RMS(W), so λ is multiplied by the init multiplier to keep ηλ the
absolute form's. ε₁ floors
a second moment: for a factored tensor (≥ 2 dims) it clamps mean(G²) from below, so it is in G² units
(its other use there, a floor ε₁² on the G² estimate, then only loosens as G shrinks); for a 1-D tensor
its only use is that floor ε₁², so it is in gradient units.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

LABELS = ("input", "hidden", "output", "vector", "finite")
FAMILIES = ("gradient", "sign", "orthogonal", "kimi", "spectral")
EPS_KINDS = ("adam", "adafactor", "shampoo", "base", "none")
DEPTH_RULES = {None: Fraction(0), "k1": Fraction(1, 2), "k2": Fraction(1)}  # β: branch multiplier 1/r_L^β

_GROWTH = {"input": (0, 1), "hidden": (1, 1), "output": (1, 0), "vector": (0, 1), "finite": (0, 0)}


@dataclass(frozen=True)
class Power:
    """The monomial r_n^n · r_L^L."""

    n: Fraction = Fraction(0)
    L: Fraction = Fraction(0)

    def __mul__(self, other: Power) -> Power:
        return Power(self.n + other.n, self.L + other.L)

    def __truediv__(self, other: Power) -> Power:
        return Power(self.n - other.n, self.L - other.L)

    def __pow__(self, k: int | Fraction) -> Power:
        return Power(self.n * k, self.L * k)

    def value(self, r_n: float, r_L: float) -> float:
        return r_n ** float(self.n) * r_L ** float(self.L)

    def __str__(self) -> str:
        parts = [f"r_{s}^{e}" if e != 1 else f"r_{s}" for s, e in (("n", self.n), ("L", self.L)) if e]
        return "·".join(parts) or "1"


ONE = Power()


def n_pow(e: int | Fraction) -> Power:
    return Power(n=Fraction(e))


def L_pow(e: int | Fraction) -> Power:
    return Power(L=Fraction(e))


@dataclass(frozen=True)
class Rule:
    """Multipliers of one parameter relative to its base value (as powers of r_n and r_L)."""

    init: Power
    forward: Power
    lr: Power
    wd: Power
    eps: Power | tuple[Power, Power] | None  # one per ε: Adafactor's (ε₁, ε₂); None: the optimizer has no ε


def rule(label: str, in_branch: bool, family: str, depth_rule: str | None, eps_kind: str = "adam",
         relative_step: bool = False, decay: str = "decoupled", factored: bool = True) -> Rule:
    """The spectral recipe for one parameter (see the module docstring for the derivation).

    ``decay="decoupled"`` (ΔW = −η(A + λW), the paper's form) gives the paper's WD row, λ ∝ ‖A‖_R/‖W‖_R.
    ``decay="l2"`` is for an optimizer configured to add λW to the gradient before it normalises or
    preconditions it (torch's Adam, Shampoo or Lion without decoupling): λW is then scaled together
    with G, so it must stay in proportion to G, λ ∝ (gradient entries)/(init std) — not the paper's
    row, which assumes the decoupled form. ``factored``: the tensor has ≥ 2 dims (Adafactor's ε₁ unit).
    """
    if label not in LABELS:
        raise ValueError(f"unknown role {label!r}; roles are {', '.join(LABELS)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown optimizer family {family!r}; families are {', '.join(FAMILIES)}")
    if eps_kind not in EPS_KINDS:
        raise ValueError(f"unknown ε kind {eps_kind!r}; kinds are {', '.join(EPS_KINDS)}")
    e_in, e_out = _GROWTH[label]
    beta = DEPTH_RULES[depth_rule]
    branch = in_branch and label != "finite"
    m = n_pow(-1) if label == "output" else L_pow(-beta) if branch else ONE
    contribution = L_pow(-1) if branch and beta else ONE
    target = contribution / m
    raw = {
        "gradient": m * n_pow(e_in - e_out),
        "sign": n_pow(e_in),
        "orthogonal": n_pow(Fraction(e_in - e_out, 2)),
        "kimi": n_pow(Fraction(max(e_in, e_out), 2) + Fraction(e_in - e_out, 2)),
        "spectral": ONE,
    }[family]
    weight_norm = n_pow(1) if label == "output" else ONE
    spectral_init = n_pow(Fraction(-e_in, 2) + min(0, Fraction(e_out - e_in, 2)))
    init = spectral_init / Power(n=m.n)  # the readout's 1/r_n lives in its forward multiplier
    lr = target / raw
    grad_entries = m * n_pow(-e_out)
    wd = grad_entries / init if decay == "l2" else raw / weight_norm
    if relative_step:  # the step is × RMS(W) ∝ init, the decay (η·λ) is not: both corrections here
        lr, wd = lr / init, wd * init
    eps = {
        "adam": grad_entries,
        "adafactor": (grad_entries**2 if factored else grad_entries, init),
        "shampoo": (m * n_pow(Fraction(e_in - e_out, 2))) ** 2,
        "base": ONE,
        "none": None,
    }[eps_kind]
    return Rule(init=init, forward=m, lr=lr, wd=wd, eps=eps)
