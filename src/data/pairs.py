"""Prompt–response data for masked-diffusion LMs: SFT rows and preference pairs (TRL conventions).

Rows come from a JSONL file or a Hugging Face dataset (local path, or a name with a cache):

* SFT: ``{"prompt": str, "completion": str}`` (TRL's prompt–completion format);
* preferences: ``{"prompt": str, "chosen": str, "rejected": str}`` (TRL's DPO format).

A malformed row (missing field, wrong type, empty response) is a ``ConfigError`` naming the file,
row and field. Text is tokenized (bytes by default, or a local HF tokenizer) and every sequence is
laid out as ``[prompt, response, EOS, EOS padding …]`` of one fixed length T (LLaDA's SFT format).
EOS is the tokenizer's own ``eos_token`` where its ``tokenizer_config.json`` names one (a published
checkpoint's ``<|endoftext|>``), else an extra id (the tokenizer's vocab size) and the mask token the
next one (the model's). With ``chat_template`` the prompt is the tokenizer's chat template rendered
over it as one user turn (``src/data/chat.py``), as instruction-tuned checkpoints were trained.
Per sequence two masks say what is what: ``response`` (the response and its terminating EOS) and
``padding`` (the EOS padding after it). SFT learns both (the padding teaches length); VRPO's ELBOs
sum over ``response`` only.

Training batches are a pure function of (seed, step, rank), like the token streams; validation is
every held-out row, in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.checks import check_sizes
from src.errors import ConfigError
from src.data.hf import load_hf_split
from src.data.batches import heldout_loader, train_loader
from src.data.text import load_tokenizer

SFT_FIELDS = ("prompt", "completion")
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def read_rows(source: str, fields: Sequence[str], split: str = "train") -> list[dict[str, str]]:
    """Rows of a JSONL file or HF dataset, checked: every field present and a string, responses
    (every field but the prompt) non-empty."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".json") and path.is_file():
        rows, where = [], []
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            row = raw.count(b"\n", 0, err.start) + 1
            raise ConfigError(f"{path}: row {row}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                              f"{err.start})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: row {number}: not valid JSON ({err.msg})") from None
            where.append(f"{path}: row {number}")
    elif path.suffix in (".jsonl", ".json"):
        raise ConfigError(f"data.path={source!r}: no such file")
    else:
        dataset = load_hf_split(source, None, split)
        rows, where = list(dataset), [f"{source}: row {i}" for i in range(len(dataset))]
    for row, place in zip(rows, where):
        check_row(row, fields, place)
    if not rows:
        raise ConfigError(f"data.path={source!r}: no rows")
    return rows


def check_row(row: Any, fields: Sequence[str], place: str) -> None:
    if not isinstance(row, dict):
        raise ConfigError(f"{place}: expected an object with fields {', '.join(fields)}, got {type(row).__name__}")
    for field in fields:
        if field not in row:
            raise ConfigError(f"{place}: missing field {field!r}")
        if not isinstance(row[field], str):
            raise ConfigError(f"{place}: field {field!r} must be a string, got {type(row[field]).__name__}")
        if field != "prompt" and not row[field].strip():
            raise ConfigError(f"{place}: field {field!r} is empty")
    if "chosen" in fields and "rejected" in fields and row["chosen"].strip() == row["rejected"].strip():
        raise ConfigError(f"{place}: chosen equals rejected, a pair that prefers nothing; drop the row")


@dataclass(frozen=True)
class Layout:
    """How text becomes fixed-length sequences: token ids, EOS, the length T, the prompt format."""

    tokenizer: Any
    length: int
    chat: bool = False

    @property
    def eos_id(self) -> int:
        own = self.tokenizer.eos_id
        return self.tokenizer.vocab_size if own is None else own

    @property
    def vocab_size(self) -> int:
        """Tokenizer ids, plus EOS where it is an extra id (the model adds the mask token)."""
        return self.tokenizer.vocab_size + (self.tokenizer.eos_id is None)

    def prompt(self, text: str) -> np.ndarray:
        if self.chat:
            return self.tokenizer.encode(self.tokenizer.config.render(text), special=False).astype(np.int64)
        return self.tokenizer.encode(text).astype(np.int64)

    def encode(self, prompt: str, response: str, place: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, response mask, padding mask), each of length T."""
        p, r = self.prompt(prompt), self.tokenizer.encode(response).astype(np.int64)
        used = len(p) + len(r) + 1
        if used > self.length:
            raise ConfigError(f"{place}: prompt + response + EOS is {used} tokens, longer than "
                              f"data.max_length={self.length}")
        tokens = np.full(self.length, self.eos_id, dtype=np.int64)
        tokens[: len(p)], tokens[len(p): len(p) + len(r)] = p, r
        position = np.arange(self.length)
        return tokens, (position >= len(p)) & (position < used), position >= used

    def decode(self, ids: Sequence[int]) -> str:
        """Text of response ids up to the first EOS (bytes or HF tokens)."""
        ids = list(ids)
        ids = ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids
        return self.tokenizer.decode([i for i in ids if i < self.tokenizer.vocab_size])


def encode_rows(layout: Layout, rows: list[dict[str, str]], responses: Sequence[str], places: Sequence[str]
                ) -> dict[str, torch.Tensor]:
    """Stacked tensors per response field: ``<field>`` tokens, ``<field>_response``, ``<field>_padding``."""
    out: dict[str, torch.Tensor] = {}
    for field in responses:
        parts = [layout.encode(row["prompt"], row[field], place) for row, place in zip(rows, places)]
        for i, suffix in enumerate(("", "_response", "_padding")):
            out[field + suffix] = torch.from_numpy(np.stack([part[i] for part in parts]))
    return out


class Rows(Dataset):
    """Encoded rows; item i is a dict of tensors (and its index, for fixed per-row noise)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**{k: v[i] for k, v in self.tensors.items()}, "index": torch.tensor(i)}


def random_rows(rows: Rows, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A training batch of rows drawn with replacement (and their indices)."""
    index = torch.from_numpy(rng.integers(0, len(rows), batch_size))
    return {**{k: v[index] for k, v in rows.tensors.items()}, "index": index}


class PairData(L.LightningDataModule):
    """Base: ``rows()`` gives (train rows, held-out rows); ``responses`` names the response fields."""

    fields: tuple[str, ...] = SFT_FIELDS

    def __init__(self, *, max_length: int = 64, batch_size: int = 32, val_size: int = 256, seed: int = 0,
                 tokenizer: str | None = None, chat_template: bool | None = None) -> None:
        """``chat_template``: format prompts with the tokenizer's chat template (None: when it has one)."""
        super().__init__()
        check_sizes(max_length=max_length, batch_size=batch_size, val_size=val_size)
        self.batch_size, self.val_size, self.seed = batch_size, val_size, seed
        tok = load_tokenizer(tokenizer)
        if chat_template and tok.config.chat_template is None:
            raise ConfigError(f"data.chat_template=true, but data.tokenizer={tokenizer!r} has no chat template "
                              "(a tokenizer_config.json with chat_template beside tokenizer.json)")
        chat = tok.config.chat_template is not None if chat_template is None else chat_template
        self.layout = Layout(tok, max_length, chat)
        self.train: Rows | None = None
        self.val: Rows | None = None
        self.val_rows: list[dict[str, str]] = []

    @property
    def responses(self) -> tuple[str, ...]:
        return self.fields[1:]

    @property
    def model_inputs(self) -> dict[str, int]:
        return {"vocab_size": self.layout.vocab_size}

    def rows(self) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
        """(training rows, held-out rows, a name for error messages)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        train, val, name = self.rows()
        self.val_rows = val
        self.train = Rows(encode_rows(self.layout, train, self.responses, [f"{name}: row {i}" for i in range(len(train))]))
        self.val = Rows(encode_rows(self.layout, val, self.responses, [f"{name}: held-out row {i}" for i in range(len(val))]))

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.trainer, partial(random_rows, self.train, self.batch_size), self.seed)

    def val_dataloader(self) -> DataLoader:
        return heldout_loader(self.val, self.batch_size)


def split_rows(rows: list[dict[str, str]], val_size: int, seed: int, name: str
               ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """A seeded random ``val_size`` rows held out, the rest for training."""
    if val_size >= len(rows):
        raise ConfigError(f"{name}: data.val_size={val_size} leaves no training rows out of {len(rows)}")
    order = np.random.default_rng([seed, 7]).permutation(len(rows))
    held = set(order[:val_size].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


class FileData(PairData):
    """Rows from ``path`` (JSONL or HF dataset); ``val_size`` of them held out."""

    def __init__(self, path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path

    def rows(self) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
        rows = read_rows(self.path, self.fields)
        return (*split_rows(rows, self.val_size, self.seed, self.path), self.path)


class SFTFileData(FileData):
    fields = SFT_FIELDS


class PreferenceFileData(FileData):
    fields = PREFERENCE_FIELDS
