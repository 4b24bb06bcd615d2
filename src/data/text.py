"""Token-stream language-model data: built-in Python-source corpus, user text files, HF datasets.

Every source yields (split, text) documents; they are tokenized once into a cached token file per
split and served as windows of seq_len + 1 tokens:

* training batch at step s on rank r: B window offsets drawn from SeedSequence([seed, s, r])
  (``src/data/batches.py``: common random numbers across a sweep, exact resume);
* validation uses ``val_batches · batch_size`` fixed windows spread evenly over the validation split.
"""

from __future__ import annotations

import glob
import hashlib
from functools import partial
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.checks import check_sizes
from src.data.chat import CONFIG, TokenizerConfig
from src.errors import ConfigError
from src.data.batches import hash_unit, heldout_loader, train_loader
from src.data.hf import load_hf_split

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256): needs no files and no download. No EOS, no chat template."""

    vocab_size = 256
    fingerprint = "bytes"
    eos_id: int | None = None
    config = TokenizerConfig()

    def encode(self, text: str, special: bool = True) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer read from a local path.

    ``path`` is a ``tokenizer.json`` file, or a directory holding ``tokenizer.json`` or the GPT-2 style
    ``vocab.json`` + ``merges.txt`` pair. Nothing is downloaded. A ``tokenizer_config.json`` beside
    it (as published checkpoints ship) gives ``eos_id`` (its ``eos_token``, an id inside the vocab) and
    the chat template (``config``); without one, ``eos_id`` is None.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer
        from tokenizers.implementations import ByteLevelBPETokenizer

        path = Path(path)
        files = [path] if path.is_file() else [path / "tokenizer.json"]
        try:
            if files[0].is_file():
                self._tok = Tokenizer.from_file(str(files[0]))
            elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
                files = [path / "vocab.json", path / "merges.txt"]
                self._tok = ByteLevelBPETokenizer(str(files[0]), str(files[1]))
            else:
                raise ConfigError(
                    f"data.tokenizer={str(path)!r}: expected a tokenizer.json file, or a directory with "
                    "tokenizer.json or vocab.json + merges.txt"
                )
        except ConfigError:
            raise
        except Exception as err:  # the tokenizers library raises plain Exceptions for unreadable files
            raise ConfigError(f"data.tokenizer={str(path)!r}: not a Hugging Face tokenizer ({err})") from err
        self.vocab_size = self._tok.get_vocab_size()
        directory = path if path.is_dir() else path.parent
        self.config = TokenizerConfig.read(directory)
        self.eos_id = None if self.config.eos_token is None else self._tok.token_to_id(self.config.eos_token)
        if self.config.eos_token is not None and self.eos_id is None:
            raise ConfigError(f"{directory / CONFIG}: eos_token {self.config.eos_token!r} is not in the tokenizer's vocab")
        configs = [directory / CONFIG] if (directory / CONFIG).is_file() else []
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files + configs)).hexdigest()[:16]
        self.fingerprint = f"hf-{digest}"

    def encode(self, text: str, special: bool = True) -> np.ndarray:
        """Token ids; ``special=False`` adds no BOS/EOS of the post-processor (for templated text)."""
        return np.asarray(self._tok.encode(text, add_special_tokens=special).ids, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def load_tokenizer(path: str | None) -> ByteTokenizer | HFTokenizer:
    """Byte-level by default; an HF tokenizer when a local path is given."""
    if path is None:
        return ByteTokenizer()
    if not Path(path).exists():
        raise ConfigError(f"data.tokenizer={path!r}: no such file or directory")
    return HFTokenizer(path)


# --------------------------------------------------------------------------- windows


def random_windows(tokens: np.ndarray, seq_len: int, batch_size: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch (x, y) of shape (B, T): windows of T + 1 tokens at random offsets."""
    offsets = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    window = torch.from_numpy(tokens[offsets[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return window[:, :-1], window[:, 1:]


class FixedWindows(Dataset):
    """``count`` validation windows (x, y) at evenly spaced offsets of the validation split."""

    def __init__(self, tokens: np.ndarray, seq_len: int, count: int) -> None:
        self.tokens, self.seq_len = tokens, seq_len
        self.offsets = np.linspace(0, len(tokens) - seq_len - 1, count).astype(np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(self.offsets[i])
        window = torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))
        return window[:-1], window[1:]


# --------------------------------------------------------------------------- data modules


def hash_split(key: str, val_fraction: float) -> str:
    """Deterministic split of a document by the hash of its key: 'val' with probability val_fraction."""
    return "val" if hash_unit(key) < val_fraction else "train"


def tail_split(text: str, val_fraction: float) -> Iterator[tuple[str, str]]:
    """The last val_fraction of a document's characters is validation, the rest training."""
    cut = int(round(len(text) * (1.0 - val_fraction)))
    yield "train", text[:cut]
    yield "val", text[cut:]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class TokenStreamData(L.LightningDataModule):
    """Base class: subclasses define ``kind``, ``documents()`` and ``source_fingerprint()``."""

    kind: str

    def __init__(self, *, seq_len: int = 128, batch_size: int = 16, val_batches: int = 8,
                 val_fraction: float = 0.05, seed: int = 0, tokenizer: str | None = None,
                 cache_dir: str = ".cache/scaling-lab") -> None:
        super().__init__()
        check_sizes(seq_len=seq_len, batch_size=batch_size, val_batches=val_batches)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r} must be strictly between 0 and 1")
        self.seq_len, self.batch_size, self.val_batches = seq_len, batch_size, val_batches
        self.val_fraction, self.seed, self.cache_dir = val_fraction, seed, Path(cache_dir)
        self.tokenizer_path = tokenizer
        self._tokenizer = None
        self.splits: dict[str, np.ndarray] = {}

    # -- to be defined by sources
    def documents(self) -> Iterator[tuple[str, str]]:
        raise NotImplementedError

    def source_fingerprint(self) -> str:
        raise NotImplementedError

    # -- shared
    @property
    def tokenizer(self) -> ByteTokenizer | HFTokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def model_inputs(self) -> dict[str, int]:
        """The constructor numbers the data decides for a language model."""
        return {"vocab_size": self.vocab_size}

    def cache_path(self) -> Path:
        key = f"{self.source_fingerprint()}|{self.tokenizer.fingerprint}|{self.val_fraction}"
        return self.cache_dir / "tokens" / f"{self.kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def prepare_data(self) -> None:
        """Tokenize the source once into ``<cache>/tokens/<kind>-<hash>/{train,val}.npy``."""
        path = self.cache_path()
        if (path / "train.npy").exists() and (path / "val.npy").exists():
            return
        log.info("tokenizing %s into %s", self.kind, path)
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for split, text in self.documents():
            if text:
                parts[split].append(self.tokenizer.encode(text))
        dtype = np.uint8 if self.vocab_size <= 2**8 else np.uint16 if self.vocab_size <= 2**16 else np.uint32
        path.mkdir(parents=True, exist_ok=True)
        for split, chunks in parts.items():
            tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
            _save_atomic(path / f"{split}.npy", tokens.astype(dtype))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        path = self.cache_path()
        for split in ("train", "val"):
            tokens = np.load(path / f"{split}.npy", mmap_mode="r")
            if len(tokens) < self.seq_len + 1:
                raise ConfigError(
                    f"data: the {split} split of {self.kind} has {len(tokens)} tokens, fewer than "
                    f"seq_len + 1 = {self.seq_len + 1}; add text or lower data.seq_len"
                )
            self.splits[split] = tokens

    def train_dataloader(self) -> DataLoader:
        draw = partial(random_windows, self.splits["train"], self.seq_len, self.batch_size)
        return train_loader(self.trainer, draw, self.seed)

    def val_dataloader(self) -> DataLoader:
        windows = FixedWindows(self.splits["val"], self.seq_len, self.val_batches * self.batch_size)
        return heldout_loader(windows, self.batch_size)


class PySourceData(TokenStreamData):
    """The running Python's standard-library source (``*.py`` under sysconfig's stdlib path).

    Always present, no download; about 13 MB of text. Files that are not valid UTF-8 (a few test
    fixtures) are skipped; site-packages is excluded. Split by the hash of each file's relative path.
    """

    kind = "pysource"

    def _files(self) -> list[Path]:
        root = Path(sysconfig.get_paths()["stdlib"])
        skip = {"site-packages", "dist-packages", "__pycache__"}
        return sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))

    def source_fingerprint(self) -> str:
        files = self._files()
        root = Path(sysconfig.get_paths()["stdlib"])
        listing = "\n".join(f"{p.relative_to(root)}:{p.stat().st_size}" for p in files)
        return f"python{sys.version_info[0]}.{sys.version_info[1]}:{hashlib.sha256(listing.encode()).hexdigest()}"

    def documents(self) -> Iterator[tuple[str, str]]:
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in self._files():
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            yield hash_split(str(path.relative_to(root)), self.val_fraction), text


class TextFilesData(TokenStreamData):
    """UTF-8 text files given by the user (paths or glob patterns); the tail of each file is validation."""

    kind = "text_files"

    def __init__(self, paths: list[str] | str, **kwargs) -> None:
        super().__init__(**kwargs)
        patterns = [paths] if isinstance(paths, str) else list(paths or [])
        if not patterns:
            raise ConfigError("data.paths is empty; give one or more text files, e.g. data.paths=[notes.txt]")
        self.files: list[Path] = []
        for pattern in patterns:
            matches = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                raise ConfigError(f"data.paths: no file matches {str(pattern)!r}")
            self.files.extend(files)

    def source_fingerprint(self) -> str:
        return "\n".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in self.files)

    def documents(self) -> Iterator[tuple[str, str]]:
        for path in self.files:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(
                    f"data.paths: {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                    f"{err.start}); convert it to UTF-8 or leave it out"
                ) from None
            yield from tail_split(text, self.val_fraction)


class HFTextData(TokenStreamData):
    """A Hugging Face ``datasets`` text dataset: a local file or directory, or a Hub name.

    Local ``.json/.jsonl/.txt/.csv/.parquet`` files and saved datasets load offline. A Hub name needs
    the Hub, or a cached copy with ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``; when neither is
    available the run stops with one line instead of waiting for network retries. Rows are documents;
    ``val_split`` names a validation split, else rows are split by the hash of their index.
    """

    kind = "hf_text"
    def __init__(self, name_or_path: str, subset: str | None = None, train_split: str = "train",
                 val_split: str | None = None, text_field: str = "text", **kwargs) -> None:
        super().__init__(**kwargs)
        if not name_or_path:
            raise ConfigError("data.name_or_path is empty; give a local path or a Hugging Face dataset name")
        self.name_or_path, self.subset = str(name_or_path), subset
        self.train_split, self.val_split, self.text_field = train_split, val_split, text_field
        self._datasets = None

    def _load(self, split: str):
        return load_hf_split(self.name_or_path, self.subset, split, self.val_split)

    def _splits(self) -> dict:
        if self._datasets is None:
            self._datasets = {"train": self._load(self.train_split)}
            if self.val_split is not None:
                self._datasets["val"] = self._load(self.val_split)
            for split, ds in self._datasets.items():
                if self.text_field not in ds.column_names:
                    raise ConfigError(
                        f"data.text_field={self.text_field!r} is not a column of {self.name_or_path} "
                        f"({split}); columns: {', '.join(ds.column_names)}"
                    )
        return self._datasets

    def source_fingerprint(self) -> str:
        return "|".join(f"{s}:{ds._fingerprint}" for s, ds in self._splits().items())

    def documents(self) -> Iterator[tuple[str, str]]:
        for split, ds in self._splits().items():
            for i, text in enumerate(ds[self.text_field]):
                if not isinstance(text, str):
                    raise ConfigError(f"data: {self.name_or_path} row {i} field {self.text_field!r} "
                                      f"is {type(text).__name__}, not text")
                yield (split if self.val_split else hash_split(str(i), self.val_fraction)), text
