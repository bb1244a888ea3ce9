"""The normalized record every stage reads and writes, and reading/writing record files.

A record is a plain dict (the trainer and `datasets` both want dicts) with keys in this order:
id, problem, answer, source, level (optional int 1-5), subject (optional), solution (optional),
prompt (optional, added by the output stage). This is the format of the data shipped in
`torl.bundled_data` (its SOURCES.md describes each field), and the README's "Your own data".
In memory, training, eval and analysis use `torl.question`'s names (`question_id`, `gold`);
`record_to_question` / `question_to_record` convert between the two.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from torl import bundled_data
from torl.errors import DataError
from torl.question import make_question

FIELD_ORDER = ("id", "problem", "answer", "source", "level", "subject", "solution", "prompt")
REQUIRED_FIELDS = ("id", "problem", "answer", "source")
RECORD_SUFFIXES = (".jsonl", ".parquet")
READ_SUFFIXES = (*RECORD_SUFFIXES, ".jsonl.gz")  # the shipped MATH training split is gzip'd


def make_record(**fields: object) -> dict:
    """Builds a record in canonical key order; optional fields that are None are left out."""
    unknown = set(fields) - set(FIELD_ORDER)
    if unknown:
        raise DataError(f"unknown record field(s) {sorted(unknown)}; allowed: {list(FIELD_ORDER)}")
    return {k: fields[k] for k in FIELD_ORDER if fields.get(k) is not None}


def record_to_question(record: dict) -> dict:
    """The `torl.question` shape of a record: its `id` becomes `question_id`, its `answer` `gold`."""
    return make_question(record["id"], record["problem"], record["answer"])


def question_to_record(question: dict, source: str) -> dict:
    """A record (for a record file) holding `question`, which came from `source`."""
    return make_record(id=question["question_id"], problem=question["problem"], answer=question["gold"], source=source)


def open_jsonl(path: Path) -> TextIO:
    """A (possibly gzip-compressed, `.jsonl.gz`) JSONL file opened for reading text; shipped
    files are checked against their recorded sha256 first."""
    path = bundled_data.verified(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_records(path: str | Path) -> list[dict]:
    """Reads normalized records from `.jsonl` or `.parquet`; every row must have the required fields.

    Use `torl.data.ingest` for raw datasets; this reader is for files the pipeline wrote.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"record file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = [{k: v for k, v in r.items() if v is not None} for r in pq.read_table(path).to_pylist()]
        where = [f"{path} row {i}" for i in range(len(rows))]
    elif path.name.endswith((".jsonl", ".jsonl.gz")):
        rows, where = [], []
        with open_jsonl(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                where.append(f"{path}:{lineno}")
    else:
        raise DataError(f"{path}: record files must end in {', '.join(READ_SUFFIXES)}")
    for row, loc in zip(rows, where):
        if not isinstance(row, dict):
            raise DataError(f"{loc}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in REQUIRED_FIELDS if k not in row]
        if missing:
            raise DataError(
                f"{loc}: record lacks {missing}; run `torl data ingest` on raw data first"
            )
    return rows


def write_records(records: Iterable[dict], path: str | Path) -> Path:
    """Writes records to `.jsonl` (one object per line, UTF-8) or `.parquet`; returns the path."""
    path = Path(path)
    records = list(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        present = [k for k in FIELD_ORDER if any(k in r for r in records)]
        schema = pa.schema(
            [(k, pa.int64() if k == "level" else pa.string()) for k in present]
        )
        table = pa.Table.from_pylist([{k: r.get(k) for k in present} for r in records], schema=schema)
        pq.write_table(table, path)
    else:
        raise DataError(f"{path}: output must end in {' or '.join(RECORD_SUFFIXES)}")
    return path
