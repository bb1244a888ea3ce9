"""Ingest: read a raw dataset (local file or Hugging Face hub id) into normalized records.

Column mapping is detected for common schemas (normalized torl files, question+answer and
problem+answer sets such as DeepScaleR / NuminaMath-1.5 / MATH-500, problem+solution sets such as
MATH and NuminaMath-CoT) or given by the user. The answer column is read as it is, unless most of
its values carry GSM8K's `#### 42` (then the text after `####`); without an answer column, the
gold answer is the last `\\boxed{}` of the solution (torl.reward's extractor). Rows that cannot be
read at all are "malformed": by default they stop the run naming the row; with
`on_malformed="skip"` they are counted and shown in the report. Rows that read fine but have no
problem text or no gold answer are removed and counted (`no_problem`, `no_answer`) with the
reason, e.g. which column was empty.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torl import bundled_data
from torl.data.records import DataError, make_record, open_jsonl
from torl.data.report import StageReport, drop_warning

TARGET_FIELDS = ("id", "problem", "answer", "solution", "level", "subject", "source")
ANSWER_FORMATS = ("plain", "gsm8k", "boxed")  # boxed: take the last \boxed{} of the mapped column
LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv")


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
    if {"question", "answer"} <= columns and "problem" not in columns:  # GSM8K (see _sniff_answer_format), yours
        return Schema("question-answer", "question", "answer", _first(columns, "solution"), level, subject,
                      _first(columns, "id", "idx", "unique_id"), _first(columns, "source"))
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


def _sniff_answer_format(schema: Schema, rows: list[dict]) -> None:
    """GSM8K writes its answers as a worked solution ending in `#### 42`: when most values of the
    answer column look like that, read them so; otherwise the column holds the answer itself."""
    values = [str(r[schema.answer]) for r in rows[:1000] if r.get(schema.answer) is not None]
    if values and 2 * sum("####" in v for v in values) > len(values):
        schema.answer_format = "gsm8k"
        schema.name = "gsm8k" if schema.name == "question-answer" else f"{schema.name}+gsm8k-answers"


def resolve_schema(columns: set[str], mapping: dict[str, str] | None, where: str,
                   rows: list[dict] | None = None) -> Schema:
    """Detected schema overridden by the user's mapping; unknown fields or columns are errors.
    With `rows`, an answer column's format is told from its values (see `_sniff_answer_format`)."""
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
    elif schema.answer and rows and not schema.keep_ids:
        _sniff_answer_format(schema, rows)
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
    with open_jsonl(path) as f:
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
    readers = {".jsonl": _read_jsonl, ".jsonl.gz": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet,
               ".csv": _read_csv}
    suffix = ".jsonl.gz" if p.name.endswith(".jsonl.gz") else p.suffix
    if suffix not in readers:
        raise DataError(f"{p}: unsupported file type {p.suffix!r}; use one of {LOCAL_SUFFIXES}")
    return RawRows(str(p), p.name.removesuffix(suffix).lower(), list(readers[suffix](bundled_data.verified(p))))


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


def _gold(row: dict, schema: Schema) -> tuple[str | None, str | None, str]:
    """(answer, solution, why there is no answer) of a row, by the schema's answer format."""
    from torl.reward import extract_boxed

    solution = _as_text(row.get(schema.solution), schema.solution) if schema.solution else None
    if schema.answer:
        raw = _as_text(row.get(schema.answer), schema.answer)
        if raw is None:
            return None, solution, f"column {schema.answer!r} is empty"
        if schema.answer_format == "gsm8k":
            head, sep, tail = raw.rpartition("####")
            why = (f"no '####' in column {schema.answer!r}, read as GSM8K answers; "
                   "--map answer_format=plain reads the column as it is")
            return (tail.replace(",", "").strip() if sep else None), solution or (head.strip() if sep else None), why
        if schema.answer_format == "boxed":
            return extract_boxed(raw), solution, f"no \\boxed{{}} in column {schema.answer!r} (answer_format boxed)"
        return raw, solution, f"column {schema.answer!r} is empty"
    why = f"no \\boxed{{}} in column {schema.solution!r} (no answer column; map one with --map answer=COLUMN)"
    return (extract_boxed(solution) if solution is not None else None), solution, why


def _row_to_record(row: dict, schema: Schema, source: str, index: int,
                   stats: dict) -> tuple[dict, tuple[str, str] | None]:
    """The record of a row, and (reason, why) when it cannot be used (no problem text, no gold answer)."""
    problem = _as_text(row.get(schema.problem), schema.problem)
    answer, solution, why_no_answer = _gold(row, schema)
    if answer is not None and not schema.answer:
        stats["answers_from_solution"] += 1
    if answer is not None:
        answer = _clean_answer(answer) or None

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
    record = make_record(id=rec_id, problem=problem or "", answer=answer or "", source=rec_source,
                         level=level, subject=subject, solution=solution)
    if problem is None:
        return record, ("no_problem", f"column {schema.problem!r} is empty")
    if answer is None:
        stats["answers_missing"] += 1
        return record, ("no_answer", why_no_answer)
    return record, None


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
        schema = resolve_schema(columns, spec.mapping, raw.where, good)
        source = spec.source or raw.default_source
        stats = {"input": raw.where, "schema": schema.name, "columns": schema.columns(),
                 "answer_format": schema.answer_format if schema.answer else "boxed in solution",
                 "rows": len(raw.rows), "answers_from_solution": 0, "answers_missing": 0, "renamed_ids": 0}
        removed_here: dict[str, int] = {}
        first_here: dict[str, list[dict]] = {}  # the first removed row of each reason, for the warning
        for index, (loc, row) in enumerate(raw.rows):
            try:
                if isinstance(row, str):
                    raise ValueError(row)  # noqa: TRY004 - the reader's note on an unparsable row
                record, unusable = _row_to_record(row, schema, source, index, stats)
            except ValueError as e:
                if on_malformed == "error":
                    raise DataError(f"{loc}: malformed row: {e}; fix it or pass --skip-malformed") from None
                report.remove("malformed_row", None, where=loc, reason=str(e))
                removed_here["malformed_row"] = removed_here.get("malformed_row", 0) + 1
                first_here.setdefault("malformed_row", [{"where": loc, "reason": str(e)}])
                continue
            if unusable:
                reason, why = unusable
                report.remove(reason, record, where=loc, why=why)
                removed_here[reason] = removed_here.get(reason, 0) + 1
                first_here.setdefault(reason, [{"where": loc, "why": why}])
                continue
            if record["id"] in seen_ids:  # keep every row: make the clashing id unique, and say so
                seen_ids[record["id"]] += 1
                record["id"] = f"{record['id']}#{seen_ids[record['id']]}"
                stats["renamed_ids"] += 1
            seen_ids.setdefault(record["id"], 1)
            records.append(record)
        report.details["inputs"].append(stats)
        warning = drop_warning(f"ingest of {raw.where} (schema {schema.name})", len(raw.rows), removed_here, first_here)
        report.warnings += [warning] if warning else []
    return records, report.finish(len(records), time.perf_counter() - start)
