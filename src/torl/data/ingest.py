"""Ingest: read a raw dataset (local file or Hugging Face hub id) into normalized records.

Column mapping is detected for common schemas (normalized torl files, GSM8K, problem+answer sets
such as DeepScaleR / NuminaMath-1.5 / MATH-500, problem+solution sets such as MATH and
NuminaMath-CoT) or given by the user. Without an answer column, the gold answer is the last
`\\boxed{}` of the solution (torl.reward's extractor). Rows that cannot be read at all are
"malformed": by default they stop the run naming the row; with `on_malformed="skip"` they are
counted and shown in the report. Rows that read fine but lack a problem or answer are kept with
the field empty, so the filter stage's `missing_fields` rule counts them by name.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torl.data.records import DataError, make_record
from torl.data.report import StageReport

TARGET_FIELDS = ("id", "problem", "answer", "solution", "level", "subject", "source")
ANSWER_FORMATS = ("plain", "gsm8k", "boxed")  # boxed: take the last \boxed{} of the mapped column
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class Schema:
    """How raw columns map onto record fields. `answer=None` means: extract from `solution`."""

    name: str
    problem: str
    answer: str | None = None
    solution: str | None = None
    level: str | None = None
    subject: str | None = None
    id: str | None = None
    source: str | None = None
    answer_format: str = "plain"
    keep_ids: bool = False  # already-normalized files keep their ids and sources verbatim

    def columns(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in TARGET_FIELDS if getattr(self, f)}


def _first(columns: set[str], *names: str) -> str | None:
    return next((n for n in names if n in columns), None)


def detect_schema(columns: set[str]) -> Schema | None:
    """Picks the column mapping for a known schema from the set of column names, or None."""
    level = _first(columns, "level")
    subject = _first(columns, "subject", "type", "problem_type")
    if {"id", "problem", "answer", "source"} <= columns:
        return Schema("torl-normalized", "problem", "answer", _first(columns, "solution"), level,
                      _first(columns, "subject"), "id", "source", keep_ids=True)
    if {"question", "answer"} <= columns and "problem" not in columns:
        return Schema("gsm8k", "question", "answer", None, level, subject,
                      _first(columns, "id", "idx"), answer_format="gsm8k")
    if {"problem", "answer"} <= columns:  # DeepScaleR, NuminaMath-1.5, MATH-500
        return Schema("problem-answer", "problem", "answer", _first(columns, "solution"), level,
                      subject, _first(columns, "unique_id", "id", "idx"), _first(columns, "source"))
    if {"problem", "solution"} <= columns:  # MATH, NuminaMath-CoT
        return Schema("problem-solution", "problem", None, "solution", level, subject,
                      _first(columns, "unique_id", "id", "idx"), _first(columns, "source"))
    return None


def parse_mapping(text: str) -> dict[str, str]:
    """Parses `problem=question,answer=final` (CLI form) into a mapping dict."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise DataError(f"bad column mapping {part!r}: write FIELD=COLUMN, e.g. problem=question")
        mapping[key.strip()] = value.strip()
    return mapping


def resolve_schema(columns: set[str], mapping: dict[str, str] | None, where: str) -> Schema:
    """Detected schema overridden by the user's mapping; unknown fields or columns are errors."""
    mapping = dict(mapping or {})
    answer_format = mapping.pop("answer_format", None)
    bad_fields = set(mapping) - set(TARGET_FIELDS)
    if bad_fields:
        raise DataError(f"unknown target field(s) {sorted(bad_fields)} in mapping; use {list(TARGET_FIELDS)}")
    missing = {f: c for f, c in mapping.items() if c not in columns}
    if missing:
        field_name, col = next(iter(missing.items()))
        raise DataError(f"{where}: unknown column {col!r} (mapped to {field_name}); columns are {sorted(columns)}")
    schema = detect_schema(columns)
    if schema is None:
        if "problem" not in mapping:
            raise DataError(
                f"{where}: cannot tell which column holds the problem (columns {sorted(columns)}); "
                "pass a mapping such as --map problem=COLUMN,answer=COLUMN"
            )
        schema = Schema("user", mapping["problem"])
    if mapping:
        schema.name += "+user"
        for f, c in mapping.items():
            setattr(schema, f, c)
        schema.keep_ids = schema.keep_ids and "id" not in mapping
    if answer_format is not None:
        if answer_format not in ANSWER_FORMATS:
            raise DataError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        schema.answer_format = answer_format
    if schema.answer is None and schema.solution is None:
        raise DataError(f"{where}: no answer or solution column; map one, e.g. --map answer=COLUMN")
    return schema


# ---- reading raw rows --------------------------------------------------------------------------

@dataclass
class RawRows:
    """Rows of one input, in order; a malformed row is (location, reason) instead of a dict."""

    where: str
    default_source: str
    rows: list[tuple[str, dict | str]] = field(default_factory=list)


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict | str]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            loc = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield loc, f"invalid JSON ({e.msg} at column {e.colno})"
                continue
            yield loc, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def _read_json(path: Path) -> Iterator[tuple[str, dict | str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} ({e.msg}); JSONL files must end in .jsonl") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and data:
        n = len(next(iter(data.values())))
        data = [{k: v[i] for k, v in data.items()} for i in range(n)]  # column-oriented JSON
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    for i, row in enumerate(data):
        yield f"{path}[{i}]", row if isinstance(row, dict) else f"expected an object, got {type(row).__name__}"


def _read_csv(path: Path) -> Iterator[tuple[str, dict | str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for row in reader:
            loc = f"{path}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                n = len(header) + len(row.get(None, [])) - sum(v is None for v in row.values())
                yield loc, f"row has {n} fields, header has {len(header)}"
            else:
                yield loc, row


def _read_parquet(path: Path) -> Iterator[tuple[str, dict | str]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path} row {i}", row


def _read_hub(name: str, split: str, subset: str | None) -> Iterator[tuple[str, dict | str]]:
    import datasets

    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # noqa: BLE001 - the hub raises many types; the user needs the id and the cause
        raise DataError(
            f"could not load {name!r} (split {split!r}) with datasets.load_dataset: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; check the id/split or pass a local file"
        ) from None
    for i, row in enumerate(ds):
        yield f"{name}[{split}] row {i}", row


def read_raw(path: str, split: str = "train", subset: str | None = None) -> RawRows:
    """Reads every row of a local file (.jsonl/.json/.parquet/.csv), a `save_to_disk` folder,
    or a hub dataset id (`owner/name` or `hf://owner/name`)."""
    p = Path(path)
    if path.startswith("hf://") or (not p.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not p.suffix):
        name = path.removeprefix("hf://")
        return RawRows(name, name.split("/")[-1].lower(), list(_read_hub(name, split, subset)))
    if p.is_dir():
        if not (p / "dataset_info.json").exists() and not (p / "state.json").exists():
            raise DataError(f"{p} is a folder but not a `datasets` save_to_disk folder; pass a file instead")
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{p}: no split {split!r}; splits are {list(ds)}")
            ds = ds[split]
        return RawRows(str(p), p.name.lower(), [(f"{p} row {i}", r) for i, r in enumerate(ds)])
    if not p.exists():
        raise DataError(f"input not found: {path} (a local file, or a hub id such as owner/name)")
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
    if p.suffix not in readers:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use one of {LOCAL_SUFFIXES}")
    return RawRows(str(p), p.stem.lower(), list(readers[p.suffix](p)))


# ---- converting rows ---------------------------------------------------------------------------

def _clean_answer(value: str) -> str:
    value = value.strip()
    while len(value) >= 2 and value.startswith("$") and value.endswith("$"):
        value = value[1:-1].strip()
    return value


def _as_text(value: object, column: str) -> str | None:
    """Column value as a string; None when absent or empty. Raises ValueError for unusable types."""
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"column {column!r} holds a list of {len(value)} items, expected one value")
        value = value[0]
    if isinstance(value, (bool, dict, list)):
        raise ValueError(f"column {column!r} holds a {type(value).__name__}, expected text")  # noqa: TRY004 - a malformed row, caught as such
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text if text.strip() else None


def _parse_level(value: object) -> int | None:
    m = re.search(r"\d+", str(value)) if value is not None else None
    return int(m.group()) if m else None


def _row_to_record(row: dict, schema: Schema, source: str, index: int, stats: dict) -> dict:
    from torl.reward import extract_boxed

    problem = _as_text(row.get(schema.problem), schema.problem)
    solution = _as_text(row.get(schema.solution), schema.solution) if schema.solution else None
    answer = None
    if schema.answer:
        raw = _as_text(row.get(schema.answer), schema.answer)
        if raw is not None and schema.answer_format == "gsm8k":
            head, sep, tail = raw.rpartition("####")
            answer = tail.replace(",", "").strip() if sep else None
            solution = solution or (head.strip() if sep else None)
        elif raw is not None and schema.answer_format == "boxed":
            answer = extract_boxed(raw)
        else:
            answer = raw
    elif solution is not None:
        answer = extract_boxed(solution)
        stats["answers_from_solution"] += answer is not None
    if answer is not None:
        answer = _clean_answer(answer) or None
    stats["answers_missing"] += answer is None

    if schema.keep_ids:
        given = row.get(schema.id)
        rec_id = str(given) if given is not None else f"{source}-{index}"
        rec_source = str(row.get(schema.source) or source)
    else:
        raw_id = row.get(schema.id) if schema.id else None
        rec_id = f"{source}-{raw_id if raw_id is not None else index}"
        sub = row.get(schema.source) if schema.source else None
        rec_source = f"{source}/{sub}" if sub else source
    level = _parse_level(row.get(schema.level)) if schema.level else None
    subject = _as_text(row.get(schema.subject), schema.subject) if schema.subject else None
    return make_record(id=rec_id, problem=problem or "", answer=answer or "", source=rec_source,
                       level=level, subject=subject, solution=solution)


@dataclass
class InputSpec:
    """One dataset to ingest: a path or hub id, plus optional split/subset, mapping and source name."""

    path: str
    split: str = "train"
    subset: str | None = None
    mapping: dict[str, str] | None = None
    source: str | None = None


def ingest(inputs: list[InputSpec | str], on_malformed: str = "error") -> tuple[list[dict], StageReport]:
    """Reads and normalizes every input; returns records and the stage report.

    on_malformed: "error" stops at the first unreadable row naming it; "skip" counts such rows
    under `malformed_row` in the report (with their locations as examples).
    """
    if on_malformed not in ("error", "skip"):
        raise DataError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    if not inputs:
        raise DataError("no inputs given; pass at least one --input")
    start = time.perf_counter()
    report = StageReport("ingest", details={"inputs": []})
    records: list[dict] = []
    seen_ids: dict[str, int] = {}
    for spec in inputs:
        spec = InputSpec(spec) if isinstance(spec, str) else spec
        raw = read_raw(spec.path, spec.split, spec.subset)
        if not raw.rows:
            raise DataError(f"{raw.where}: the dataset is empty (0 rows)")
        report.n_in += len(raw.rows)
        good = [r for _, r in raw.rows if isinstance(r, dict)]
        columns = set().union(*(r.keys() for r in good)) if good else set()
        if not good:
            loc, reason = raw.rows[0]
            raise DataError(f"{raw.where}: no readable rows (first problem: {loc}: {reason})")
        schema = resolve_schema(columns, spec.mapping, raw.where)
        source = spec.source or raw.default_source
        stats = {"input": raw.where, "schema": schema.name, "columns": schema.columns(),
                 "rows": len(raw.rows), "answers_from_solution": 0, "answers_missing": 0, "renamed_ids": 0}
        for index, (loc, row) in enumerate(raw.rows):
            try:
                if isinstance(row, str):
                    raise ValueError(row)  # noqa: TRY004 - the reader's note on an unparsable row
                record = _row_to_record(row, schema, source, index, stats)
            except ValueError as e:
                if on_malformed == "error":
                    raise DataError(f"{loc}: malformed row: {e}; fix it or pass --skip-malformed") from None
                report.remove("malformed_row", None, where=loc, reason=str(e))
                continue
            if record["id"] in seen_ids:  # keep every row: make the clashing id unique, and say so
                seen_ids[record["id"]] += 1
                record["id"] = f"{record['id']}#{seen_ids[record['id']]}"
                stats["renamed_ids"] += 1
            seen_ids.setdefault(record["id"], 1)
            records.append(record)
        report.details["inputs"].append(stats)
    return records, report.finish(len(records), time.perf_counter() - start)
