"""src.training.optimizers.Muon: torch's Muon with the Newton–Schulz dtype chosen."""

import pytest
import torch

from src.training.optimizers import Muon


def _train(make, steps=3):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(24, 40))
    v = torch.nn.Parameter(torch.randn(40, 24))  # the tall orientation
    opt = make([{"params": [w], "lr": 0.02}, {"params": [v], "lr": 0.01, "adjust_lr_fn": "match_rms_adamw"}])
    x = torch.randn(64, 24)  # full-rank gradients: rank-deficient ones make NS amplify rounding
    for _ in range(steps):
        opt.zero_grad()
        ((x @ w @ v).tanh().square().sum()).backward()
        opt.step()
    return w.detach().clone(), v.detach().clone(), opt


@pytest.mark.parametrize("nesterov", [True, False])
def test_bfloat16_is_torch_muon_bit_for_bit(nesterov):
    kwargs = dict(weight_decay=0.1, nesterov=nesterov)
    ours = _train(lambda groups: Muon(groups, ns_dtype="bfloat16", **kwargs))
    theirs = _train(lambda groups: torch.optim.Muon(groups, **kwargs))
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert torch.equal(ours[2].state[ours[2].param_groups[0]["params"][0]]["momentum_buffer"],
                       theirs[2].state[theirs[2].param_groups[0]["params"][0]]["momentum_buffer"])


def test_float32_differs_from_bfloat16_only_by_rounding():
    w32, v32, _ = _train(lambda groups: Muon(groups, ns_dtype=torch.float32))
    w16, v16, _ = _train(lambda groups: Muon(groups, ns_dtype="bfloat16"))
    start = _train(lambda groups: Muon(groups, lr=0.0), steps=1)[0]
    moved = (w32 - start).norm()
    assert 0 < (w32 - w16).norm() < 0.05 * moved  # bfloat16 has 8 bits of mantissa
    assert (v32 - v16).norm() > 0
