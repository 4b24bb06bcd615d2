"""Language-model data: splits, caching, batches as pure functions of (seed, step, rank), loaders."""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
import torch

from src.errors import ConfigError
from src.data.hf import hub_reachable
from src.data.batches import StepBatches
from src.data.text import HFTextData, PySourceData, TextFilesData, hash_split, random_windows
from tests.conftest import local_hf_tokenizer

STREAM = dict(seq_len=16, batch_size=4, val_batches=2)


@pytest.fixture(scope="module")
def pysource(tmp_path_factory):
    data = PySourceData(**STREAM, cache_dir=str(tmp_path_factory.mktemp("cache")))
    data.setup("fit")
    return data


def test_pysource_is_the_stdlib_split_by_file_hash(pysource):
    train, val = pysource.splits["train"], pysource.splits["val"]
    assert pysource.vocab_size == 256 and train.dtype == np.uint8
    assert len(train) > 5_000_000 and len(val) > 100_000
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.10  # val_fraction 0.05 of files, by size
    assert b"import " in bytes(train[:200_000])
    # the split is a function of the path alone
    assert hash_split("json/decoder.py", 0.05) == hash_split("json/decoder.py", 0.05)
    assert {hash_split(f"file{i}.py", 0.5) for i in range(20)} == {"train", "val"}


def test_token_cache_is_reused(pysource):
    path = pysource.cache_path()
    stamp = (path / "train.npy").stat().st_mtime_ns
    again = PySourceData(**STREAM, cache_dir=str(pysource.cache_dir))
    started = time.perf_counter()
    again.setup("fit")
    assert (path / "train.npy").stat().st_mtime_ns == stamp
    assert time.perf_counter() - started < 10.0  # tokenizing the corpus again takes far longer
    assert np.array_equal(again.splits["val"], pysource.splits["val"])


def test_training_batches_depend_on_seed_step_and_rank_only(pysource):
    tokens = pysource.splits["train"]
    draw = functools.partial(random_windows, tokens, 16, 4)
    x5, y5 = StepBatches(draw, seed=7).batch(5)
    assert x5.shape == (4, 16) and x5.dtype == torch.int64
    assert torch.equal(x5[:, 1:], y5[:, :-1])  # targets are inputs shifted by one
    resumed = iter(StepBatches(draw, seed=7, start_step=5))
    assert torch.equal(next(resumed)[0], x5)
    assert not torch.equal(StepBatches(draw, seed=8).batch(5)[0], x5)
    assert not torch.equal(StepBatches(draw, seed=7, rank=1).batch(5)[0], x5)


def test_validation_windows_are_fixed(pysource):
    loader = pysource.val_dataloader()
    first = [x for x, _ in loader]
    assert sum(len(x) for x in first) == 2 * 4
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in pysource.val_dataloader()]))


def test_text_files_tail_split_and_glob(tmp_path):
    (tmp_path / "a.txt").write_text("a" * 90 + "b" * 10)
    (tmp_path / "b.txt").write_text("c" * 90 + "d" * 10)
    data = TextFilesData(paths=[str(tmp_path / "*.txt")], seq_len=4, batch_size=2, val_batches=1,
                         val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert bytes(data.splits["train"]) == b"a" * 90 + b"c" * 90
    assert bytes(data.splits["val"]) == b"b" * 10 + b"d" * 10


def test_text_files_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"data.paths: no file matches '.*missing.txt'"):
        TextFilesData(paths=[str(tmp_path / "missing.txt")])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    data = TextFilesData(paths=[str(bad)], seq_len=4, batch_size=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        data.setup("fit")
    short = tmp_path / "short.txt"
    short.write_text("tiny")
    data = TextFilesData(paths=[str(short)], seq_len=16, batch_size=2, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="fewer than seq_len"):
        data.setup("fit")


def test_hf_text_from_a_local_jsonl_file(tmp_path):
    rows = [{"text": f"document number {i} " * 5, "id": i} for i in range(40)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = HFTextData(name_or_path=str(path), seq_len=8, batch_size=2, val_batches=1, val_fraction=0.25,
                      cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    total = len(data.splits["train"]) + len(data.splits["val"])
    assert total == sum(len(r["text"]) for r in rows)
    with pytest.raises(ConfigError, match="data.text_field='body' is not a column .* columns: text, id"):
        HFTextData(name_or_path=str(path), text_field="body", cache_dir=str(tmp_path / "c")).setup("fit")


def test_hf_text_local_text_file_keeps_line_breaks_and_rejects_a_val_split(tmp_path):
    path = tmp_path / "code.txt"
    path.write_text("def f():\n    return 1\n" * 20)
    data = HFTextData(name_or_path=str(path), seq_len=8, batch_size=2, val_batches=1, val_fraction=0.3,
                      cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert b"def f():\n    return 1\n" in bytes(data.splits["train"])
    with pytest.raises(ConfigError, match="data.val_split='test': code.txt is a single file"):
        HFTextData(name_or_path=str(path), val_split="test", cache_dir=str(tmp_path / "c")).setup("fit")


def test_hf_text_saved_dataset_dict_and_missing_paths(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["abc " * 20] * 40})}).save_to_disk(tmp_path / "saved")
    with pytest.raises(ConfigError, match="no split 'validation'; it has train"):
        HFTextData(name_or_path=str(tmp_path / "saved"), val_split="validation", cache_dir=str(tmp_path)).setup("fit")
    data = HFTextData(name_or_path=str(tmp_path / "saved"), seq_len=8, batch_size=2, val_fraction=0.25,
                      cache_dir=str(tmp_path / "c"))
    data.setup("fit")
    assert len(data.splits["train"]) + len(data.splits["val"]) == 40 * 80
    with pytest.raises(ConfigError, match="no such file or directory"):
        HFTextData(name_or_path="/no/such/file.jsonl", cache_dir=str(tmp_path)).setup("fit")


def test_hf_text_hub_name_fails_fast_offline(tmp_path):
    data = HFTextData(name_or_path="someone/not-a-local-dataset", cache_dir=str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="data.name_or_path='someone/not-a-local-dataset'"):
        data.setup("fit")
    assert time.perf_counter() - started < 10


def test_hub_probe_gives_up_quickly():
    started = time.perf_counter()
    hub_reachable(timeout=1.0)
    assert time.perf_counter() - started < 5


def test_hf_tokenizer_from_a_local_path(tmp_path):
    tok = local_hf_tokenizer(tmp_path, ["def foo(): return bar"] * 50 + ["import os, sys"] * 50)
    (tmp_path / "corpus.txt").write_text("def foo(): return bar\nimport os, sys\n" * 40)
    data = TextFilesData(paths=[str(tmp_path / "corpus.txt")], tokenizer=str(tmp_path), seq_len=4,
                         batch_size=2, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert data.vocab_size == tok.get_vocab_size()
    assert data.splits["train"].max() < data.vocab_size
    expected = tok.encode("def foo(): return bar").ids
    assert data.splits["train"][: len(expected)].tolist() == expected
    with pytest.raises(ConfigError, match="data.tokenizer='.*nowhere': no such file"):
        TextFilesData(paths=[str(tmp_path / "corpus.txt")], tokenizer=str(tmp_path / "nowhere")).vocab_size


def test_pinned_pairs_seed_gives_every_run_seed_the_same_pairs(tmp_path):
    """data.pairs_seed: the preference set is sampled once from the SFT run, whatever the run's seed
    (which still orders the batches); unset, the run's seed samples its own."""
    from src.data.problems import ProblemPreferenceData

    (tmp_path / "sft" / "checkpoints").mkdir(parents=True)
    (tmp_path / "sft" / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (tmp_path / "sft" / "config.yaml").write_text(
        "data:\n  problems:\n    _target_: src.data.problems.Sorting\n    count: 16\n    digits: 1\n    size: 100\n")

    def path(seed, pairs_seed=None):
        data = ProblemPreferenceData(sft_run=str(tmp_path / "sft"), cache_dir=str(tmp_path), seed=seed,
                                     pairs_seed=pairs_seed, max_length=12)
        return data.cache_path()

    assert path(1, pairs_seed=0) == path(2, pairs_seed=0) == path(0)
    assert path(1) != path(2)
