"""Reading an offline W&B run as tests need it: the records of its ``.wandb`` file (W&B's LevelDB-style
log of protobuf records: a 7-byte file header, 32 KiB blocks, chunks with a 7-byte header of crc32,
little-endian length and type FULL/FIRST/MIDDLE/LAST). wandb 0.31 ships no reader for it (its
writer is in the Go core), so the tests parse it with wandb's own protobuf definitions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def chunks(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        body, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if len(body) < length:  # the writer is still at it
            return
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body


def records(path: Path, wait_s: float = 30.0) -> list:
    """The file's records once it holds the run's exit record: wandb's core process may still be
    writing when ``finish()`` returns, on a busy machine for seconds."""
    from wandb.proto import wandb_internal_pb2 as pb

    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait_s
    while True:
        parsed = []
        try:
            for chunk in chunks(path):
                parsed.append(pb.Record())
                parsed[-1].ParseFromString(chunk)
        except (DecodeError, AssertionError):  # a header or record half written
            parsed = []
        if any(r.WhichOneof("record_type") == "exit" for r in parsed) or time.monotonic() > deadline:
            return parsed
        time.sleep(0.2)


def run_contents(run_dir: Path) -> dict[str, Any]:
    """The offline run's config and summary (nested keys as nested dicts), merged over its records, and
    its group and name."""
    (path,) = Path(run_dir).glob("*.wandb")
    config, summary, run = {}, {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"group": record.run.run_group, "name": record.run.display_name}
        items = {"config": record.config.update, "run": record.run.config.update,
                 "summary": record.summary.update}.get(kind, [])
        target = summary if kind == "summary" else config
        for item in items:
            path = [item.key] if item.key else list(item.nested_key)
            node = target
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = json.loads(item.value_json)
    return {"config": config, "summary": summary, "run": run}
