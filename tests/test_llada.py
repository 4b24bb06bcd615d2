"""LLaDA SFT and VRPO end to end: preference and SFT files (and their one-line errors), the arithmetic
task, 2-step smoke runs of llada_sft and llada_vrpo (and naive DPO), batched vs looped ELBO copies."""

from __future__ import annotations

import json
import math

import pytest
import torch

from src.errors import ConfigError
from src.data import problems
from src.data.pairs import Layout, read_rows
from src.data.text import ByteTokenizer
from src.eval import answers
from src.records import read_record
from tests.conftest import TINY, local_hf_tokenizer, run_cli

SFT = ["experiment=llada_sft", "steps=2", "val_every=2", "ckpt_every=2", "logger=csv", "model.width=32",
       "model.depth=1", "model.head_dim=16", "data.val_size=8", "data.batch_size=4"]


def _pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("row, message", [
    ({"prompt": "1+1=", "chosen": "2"}, "row 2: missing field 'rejected'"),
    ({"prompt": "1+1=", "chosen": 2, "rejected": "3"}, "row 2: field 'chosen' must be a string, got int"),
    ({"prompt": "1+1=", "chosen": "2", "rejected": "  "}, "row 2: field 'rejected' is empty"),
    ("1+1=2", "row 2: expected an object with fields prompt, chosen, rejected, got str"),
])
def test_malformed_preference_rows_name_file_row_and_field(tmp_path, row, message):
    path = _pairs(tmp_path / "prefs.jsonl", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}, row])
    with pytest.raises(ConfigError) as err:
        read_rows(str(path), ("prompt", "chosen", "rejected"))
    assert str(err.value) == f"{path}: {message}"


def test_a_malformed_file_stops_the_cli_with_one_line(tmp_path):
    path = _pairs(tmp_path / "prefs.jsonl", [{"prompt": "2+2=", "chosen": "4"}])
    result = run_cli("task=preference", "model=llada", "data=preference_file", f"data.path={path}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [f"error: {path}: row 1: missing field 'rejected'"], result.stderr


@pytest.mark.parametrize("override, message", [
    ("task.beta=0", "task: beta=0, n_t=8, n_yt=1: need beta > 0 and n_t, n_yt >= 1"),
    pytest.param("task.dpo_weight=0", "task: dpo_weight=0, sft_weight=0.0: need both >= 0, not both 0",
                 marks=pytest.mark.slow),  # the same CLI path as the first case
])
def test_bad_preference_numbers_are_one_line(tmp_path, override, message):
    path = _pairs(tmp_path / "prefs.jsonl", [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}] * 4)
    result = run_cli("task=preference", "model=llada", "data=preference_file", f"data.path={path}", "data.val_size=2",
                     "model.width=32", "model.depth=1", "model.head_dim=16", "logger=csv", override,
                     f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == [f"error: {message}"], result.stderr


def test_layout_puts_prompt_response_eos_and_padding_in_place():
    layout = Layout(ByteTokenizer(), 10)
    tokens, response, padding = layout.encode("1+2=", "3")
    assert tokens.tolist() == [*b"1+2=", ord("3"), 256, 256, 256, 256, 256]
    assert response.tolist() == [False] * 4 + [True, True] + [False] * 4  # the answer and its EOS
    assert padding.tolist() == [False] * 6 + [True] * 4
    assert layout.decode(tokens[4:].tolist()) == "3" and layout.vocab_size == 257
    with pytest.raises(ConfigError, match="longer than data.max_length=10"):
        layout.encode("11+22=", "12345")


def test_preference_file_with_a_local_hf_tokenizer(tmp_path):
    from src.data.pairs import PreferenceFileData

    rows = [{"prompt": f"add {a} and {b}", "chosen": f"sum {a + b}", "rejected": f"sum {a + b + 1}"}
            for a in range(5) for b in range(5)]
    tok = local_hf_tokenizer(tmp_path, [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in rows] * 4)
    data = PreferenceFileData(path=str(_pairs(tmp_path / "prefs.jsonl", rows)), tokenizer=str(tmp_path),
                              max_length=12, batch_size=4, val_size=5)
    data.setup()
    assert data.layout.vocab_size == tok.get_vocab_size() + 1 == data.model_inputs["vocab_size"]
    val = data.val.tensors
    for i, row in enumerate(data.val_rows):
        for field in ("chosen", "rejected"):
            ids = val[field][i][val[f"{field}_response"][i]].tolist()
            assert ids == tok.encode(row[field]).ids + [data.layout.eos_id]  # the response, then its EOS
            assert data.layout.decode(ids) == tok.decode(tok.encode(row[field]).ids)


@pytest.mark.parametrize("task, length", [(problems.Addition(2), 12), (problems.Sorting(size=2000), 72),
                                          (problems.Sorting(12, 2, 2000), 80)])
def test_a_built_in_tasks_split_is_disjoint_and_noise_gives_typical_wrong_answers(task, length):
    train, val = task.split(256, seed=0)
    assert len(val) == 256 and len(train) == len(task.problems()) - 256 and not set(train) & set(val)
    data = problems.ProblemSFTData(task, noise=0.3, val_size=256, max_length=length)
    rows, held_out, _ = data.rows()
    wrong = [r for r in rows if not task.correct(r["prompt"], r["completion"])]
    assert len(wrong) / len(rows) == pytest.approx(0.3, abs=0.03)
    assert all(task.correct(r["prompt"], r["completion"]) for r in held_out)
    assert {task.miss(r["prompt"], r["completion"]) for r in wrong} <= (
        {str(d) for d in problems.Addition.OFFSETS} if isinstance(task, problems.Addition) else {"1 wrong", "2 wrong"})
    data.setup()  # every row fits the length


def test_sorting_answers_are_long_and_checked_by_position():
    task = problems.Sorting(count=12, digits=2)
    p = (47, 3, 91, 3, 50, 12, 88, 7, 64, 29, 30, 99)
    assert task.prompt(p) == "sort 47 03 91 03 50 12 88 07 64 29 30 99:" and task.parse(task.prompt(p)) == p
    assert task.answer(p) == "03 03 07 12 29 30 47 50 64 88 91 99" and len(task.answer(p)) == 35
    assert task.correct(task.prompt(p), " 03 03 07 12 29 30 47 50 64 88 91 99 ")
    assert task.miss(task.prompt(p), "03 03 07 12 30 29 47 50 64 88 91 99") == "2 wrong"
    assert task.miss(task.prompt(p), "03 07 12") == "malformed" == task.miss(task.prompt(p), "03 x")
    assert task.score(task.prompt(p), "03 03 07 12 30 29 47 50 64 88 91 99") == pytest.approx(10 / 12)
    assert task.score(task.prompt(p), task.answer(p)) == 1.0 and task.score(task.prompt(p), "03 x") == 0.0
    assert len(set(task.problems())) == len(task.problems()) == 20_000  # distinct, and the same for every run
    assert task.problems()[:3] == problems.Sorting(12, 2).problems()[:3]
    assert problems.Sorting().answer((3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3)) == "1 1 2 3 3 3 4 5 5 5 6 7 8 9 9 9"


@pytest.mark.slow  # minutes on 2 cores: make test-slow
@pytest.mark.timeout(600)
def test_sft_then_vrpo_and_naive_dpo_two_step_runs(tmp_path):
    """VRPO first: its init_stage trains the missing SFT run; naive DPO then reuses that run."""
    sft_dir = tmp_path / "sft"
    prefs = _pairs(tmp_path / "prefs.jsonl", [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
                                              for a in range(6) for b in range(6)])
    stage = "init_stage=[" + ",".join(f"'{arg}'" for arg in SFT) + "]"
    for estimator in ("vrpo", "naive_dpo"):
        run_dir = tmp_path / estimator
        result = run_cli("experiment=llada_vrpo", f"vrpo={estimator}", f"init_from={sft_dir}", stage,
                         "data=preference_file", f"data.path={prefs}", "data.val_size=4", "data.batch_size=4",
                         "data.max_length=12", "steps=2", "val_every=2", "ckpt_every=2", "logger=csv",
                         "model.width=32", "model.depth=1", "model.head_dim=16", "vrpo.n_t=2",
                         f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("training it first" in result.stdout + result.stderr) == (estimator == "vrpo")
        final = read_record(run_dir)["metrics"]["final"]
        assert math.isfinite(final["val/loss"]) and 0 <= final["val/preference_accuracy"] <= 1
        assert 0 <= final["val/accuracy"] <= 1
        assert read_record(run_dir)["config"]["task"]["antithetic"] == (estimator == "vrpo")

    record = read_record(sft_dir)
    assert record["status"] == "ok" and record["steps"] == 2 and 0 <= record["metrics"]["final"]["val/accuracy"] <= 1
    greedy = answers.evaluate(sft_dir)
    assert greedy["accuracy"] == record["metrics"]["final"]["val/accuracy"] and greedy["answers"] == 8
    sampled = answers.evaluate(sft_dir, temperature=1.0, draws=2)
    assert sampled == answers.evaluate(sft_dir, temperature=1.0, draws=2) and sampled["answers"] == 16
    assert sum(sampled["misses"].values()) == round(16 * (1 - sampled["accuracy"]))
    assert len(sampled["row_hits"]) == 8 and sum(sampled["row_hits"]) == round(16 * sampled["accuracy"])
    assert max(sampled["row_hits"]) <= 2 and sum(greedy["row_hits"]) == round(8 * greedy["accuracy"])

    result = run_cli("experiment=llada_vrpo", f"init_from={sft_dir}", "steps=2", "model.width=32", "model.depth=1",
                     "model.head_dim=16", "data.prompts=4", "data.samples=2", f"paths.cache_dir={tmp_path / 'cache'}",
                     f"hydra.run.dir={tmp_path / 'pairs'}")
    assert result.returncode == 2 and "gave no (better, worse) pair" in result.stderr  # a 2-step SFT model is never right


def test_answers_refuses_a_run_without_prompt_response_rows(train):
    _, run_dir = train(*TINY)
    with pytest.raises(ConfigError, match="not a run on prompt–response rows"):
        answers.evaluate(run_dir)


def test_policy_equals_reference_gives_score_zero_and_loss_log_two():
    from functools import partial

    from src.models.llada import LLaDA
    from src.mup.optim import OptimizerSpec, build_optimizer
    from src.mup.plan import Parametrization, make_plan
    from src.tasks.preference import PreferenceTask

    torch.manual_seed(0)
    model = LLaDA(257, width=32, depth=1, head_dim=16)
    plan = make_plan(partial(LLaDA, 257, head_dim=16), 32, 1, 16, Parametrization(name="sp"),
                     OptimizerSpec(torch.optim.AdamW, 1e-3))
    optimizer = partial(build_optimizer, plan=plan)
    task = PreferenceTask(model, optimizer, lambda step, total: 1.0, steps=1, n_t=4)
    layout = Layout(ByteTokenizer(), 12)
    rows = [layout.encode("1+2=", "3") + layout.encode("1+2=", "4") for _ in range(3)]
    batch = {"chosen": torch.tensor([r[0] for r in rows]), "chosen_response": torch.tensor([r[1] for r in rows]),
             "chosen_padding": torch.tensor([r[2] for r in rows]), "rejected": torch.tensor([r[3] for r in rows]),
             "rejected_response": torch.tensor([r[4] for r in rows]), "index": torch.arange(3)}
    task.train()
    s, _ = task.scores(batch)
    assert torch.equal(s, torch.zeros(3)) and not task.reference.training
    assert task.loss(batch)[0].item() == pytest.approx(math.log(2))
    task.antithetic = False
    assert not torch.equal(task.scores(batch)[0], torch.zeros(3))

    task.antithetic, task.sft_weight = True, 1.0  # the SFT-only ablation drops exactly the DPO term, log 2 here
    both = task.loss(batch)[0].item()
    task.dpo_weight = 0.0
    scores, grad = task.scores, []
    task.scores = lambda b: grad.append(torch.is_grad_enabled()) or scores(b)  # noqa: E731
    assert task.loss(batch)[0].item() == pytest.approx(both - math.log(2))
    assert grad == [False]  # its scores are logged only: no DPO graph to run backward through
    with pytest.raises(ValueError, match="not both 0"):
        PreferenceTask(model, optimizer, lambda step, total: 1.0, steps=1, dpo_weight=0.0)


@pytest.mark.timeout(600)
def test_variance_study_smoke_writes_measured_and_predicted_values(tmp_path):
    run_dir = tmp_path / "variance"
    result = run_cli("experiment=vrpo_variance", "budget=smoke", "variance.repeats=12",
                     'variance.settings=["(4,1,anti)","(8,1,anti)","(4,1,indep)","(1,1,anti) t-form"]',
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads((run_dir / "variance.json").read_text())
    assert out["testbed"]["score_identically_zero_at_reference"] is True
    by_name = {c["name"]: c for c in out["configs"]}
    assert set(by_name) == {"(4,1,anti)", "(8,1,anti)", "(4,1,indep)", "(1,1,anti) t-form"}
    for name, entry in by_name.items():
        assert entry["var_score"]["measured"] > 0 and entry["grad_trace"]["loss"] > 0
        assert (entry["var_score"]["predicted"] is None) == (name == "(1,1,anti) t-form")
    ratio = next(r for r in out["ratios"] if r["ratio"] == "antithetic off / on, (4,1)")
    assert ratio["predicted"] >= 1 and ratio["ci95"][0] <= ratio["measured"] <= ratio["ci95"][1]
    assert "| ratio of Var ŝ |" in (run_dir / "variance.md").read_text()
    assert [d["policy_steps"] for d in out["distance"]] == [3, 8]  # budget=smoke's distance_steps
    assert all(-1 <= d["rho"] <= 1 and d["antithetic_gain_4_1"] >= 1 for d in out["distance"])


def test_an_unknown_variance_setting_is_one_line(tmp_path):
    result = run_cli("experiment=vrpo_variance", "budget=smoke", 'variance.settings=["(3,1,anti)"]',
                     f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-1000:]
    assert lines[0].startswith("error: variance.settings: unknown '(3,1,anti)'; choose from (4,1,anti)")
