"""Reading an offline W&B run file (``run-<id>.wandb``) without a network or the W&B app.

The file is a ":W&B" header followed by a LevelDB-style log of protobuf ``Record``s in
32 KiB blocks: each chunk has a 4-byte checksum, a 2-byte little-endian length and a type
(1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
CHUNK_HEADER = 7


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, payloads = HEADER, b"", []
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        if pos + CHUNK_HEADER + length > len(data):
            break  # a chunk W&B's writer has not finished (it flushes in its own process)
        payload = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 1:
            payloads.append(payload)
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            payloads.append(pending + payload)
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def read_finished_records(path: Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records once the run's exit record is on disk: W&B writes the file from its own
    process, which may still be flushing when `wandb.finish` has returned."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        done = any(r.WhichOneof("record_type") == "exit" for r in records)
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def history(records) -> list[dict[str, object]]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def run_info(records):
    for record in records:
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError("no run record")
