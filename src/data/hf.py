"""Loading one split of a Hugging Face ``datasets`` dataset without waiting on the network.

A local ``.json/.jsonl/.txt/.csv/.parquet`` file, a directory saved with ``save_to_disk``, a local
dataset directory, or a Hub name. A Hub name needs the Hub, or a cached copy with
``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``; when neither is available the run stops with one line
instead of the library's network retries (about 23 s).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from src.errors import ConfigError

BUILDERS = {".json": "json", ".jsonl": "json", ".txt": "text", ".csv": "csv", ".parquet": "parquet"}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connect within ``timeout`` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hf_split(name_or_path: str, subset: str | None, split: str, val_split: str | None = None):
    """One split as a ``datasets.Dataset``; every failure is a ConfigError naming data.name_or_path.
    ``val_split`` is the config's validation split name (a single file has one split only)."""
    import datasets

    key = f"data.name_or_path={name_or_path!r}"
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith(("/", ".", "~")) or path.suffix in BUILDERS
    try:
        if path.is_file():
            if val_split is not None:
                raise ConfigError(f"data.val_split={val_split!r}: {path.name} is a single file with "
                                  "one split; leave val_split null to split its rows")
            builder = BUILDERS.get(path.suffix)
            if builder is None:
                raise ConfigError(f"{key}: unknown file type {path.suffix!r}; use one of {', '.join(BUILDERS)}")
            options = {"keep_linebreaks": True} if builder == "text" else {}
            return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **options)
        if path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
            saved = datasets.load_from_disk(str(path))
            if not isinstance(saved, datasets.DatasetDict):
                return saved
            if split not in saved:
                raise ConfigError(f"{key}: no split {split!r}; it has {', '.join(saved)}")
            return saved[split]
        if not path.exists() and looks_local:
            raise ConfigError(f"{key}: no such file or directory")
        if not path.exists() and not offline_env() and not hub_reachable():
            raise ConfigError(f"{key} is not a local path and the Hugging Face Hub is unreachable; pass a "
                              "local path, or set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 to use a cached copy")
        return datasets.load_dataset(str(path) if path.exists() else name_or_path, subset, split=split)
    except ConfigError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{key} (split {split!r}): {first}") from None
