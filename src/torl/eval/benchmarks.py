"""Benchmarks by name: the shipped files, a data dir, a file path, or the Hugging Face hub.

Resolution of one name, in order:

1. an existing file (``.jsonl``/``.json``/``.parquet``/``.csv``): its rows, with problem/answer
   columns found by the usual names or given explicitly;
2. ``<data_dir>/<name>.jsonl`` (normalized records, `torl.data.records`). ``data_dir`` is
   ``--data-dir``, else ``$TORL_DATA_DIR``, else the benchmarks shipped in the package
   (`torl.bundled_data`: aime24, amc23, math500, minerva_math, olympiadbench, gsm8k, checked
   against their sha256 when read);
3. a known name missing from ``data_dir``: its Hugging Face dataset (`HF_BENCHMARKS`), loaded with
   ``datasets.load_dataset`` (needs the network, or the hub cache).

Every benchmark comes out as a list of questions, ``{"question_id", "problem", "gold"}``
(`torl.question`), the shape training uses too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torl import bundled_data
from torl.errors import UserError
from torl.question import make_question

PROBLEM_COLUMNS = ("problem", "question", "Problem", "Question", "prompt")
ANSWER_COLUMNS = ("answer", "final_answer", "gold", "Answer", "expected_answer")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".gz")  # .gz: .jsonl.gz


@dataclasses.dataclass(frozen=True)
class HubBenchmark:
    """Where a benchmark lives on the hub, and how to read a row of it."""

    dataset: str
    split: str
    problem: str
    answer: str
    config: str | None = None
    id_column: str | None = None
    convert_answer: Callable[[object], str] | None = None  # e.g. a list column, or "#### 42"


def _single(value) -> str:
    # OlympiadBench's final_answer is a one-element list (multi-answer rows hold several in one string).
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _after_hashes(value) -> str:
    return str(value).split("####")[-1].strip().replace(",", "")


HF_BENCHMARKS: dict[str, HubBenchmark] = {
    "aime24": HubBenchmark("HuggingFaceH4/aime_2024", "train", "problem", "answer", id_column="id"),
    "amc23": HubBenchmark("math-ai/amc23", "test", "question", "answer", id_column="id"),
    "math500": HubBenchmark("HuggingFaceH4/MATH-500", "test", "problem", "answer", id_column="unique_id"),
    "minerva_math": HubBenchmark("math-ai/minervamath", "test", "question", "answer"),
    "olympiadbench": HubBenchmark("math-ai/olympiadbench", "test", "question", "final_answer", id_column="id",
                                  convert_answer=_single),
    "gsm8k": HubBenchmark("openai/gsm8k", "test", "question", "answer", config="main", convert_answer=_after_hashes),
}


def default_data_dir() -> Path:
    """``$TORL_DATA_DIR``, else the benchmarks shipped in the package."""
    return bundled_data.benchmark_dir()


def resolve_benchmark(name: str, data_dir: str | Path | None = None) -> tuple[str, object]:
    """Where `name` comes from, without reading it: ("file", Path) or ("hub", HubBenchmark).

    Cheap, so every name of a run is checked before anything slow (hub downloads, models) starts.
    """
    data_dir = bundled_data.benchmark_dir(data_dir)
    path = Path(name).expanduser()
    if path.suffix in FILE_SUFFIXES and not path.exists():
        raise UserError(f"benchmark file {name} does not exist; check the path")
    if path.is_file():
        return "file", path
    if (data_dir / f"{name}.jsonl").is_file():
        return "file", data_dir / f"{name}.jsonl"
    if name in HF_BENCHMARKS:
        return "hub", HF_BENCHMARKS[name]
    local = sorted(p.stem for p in data_dir.glob("*.jsonl")) if data_dir.is_dir() else []
    known = sorted(set(local) | set(HF_BENCHMARKS))
    raise UserError(f"unknown benchmark {name!r}: use one of {', '.join(known)}, or a .jsonl/.parquet file path")


def load_benchmark(
    name: str,
    *,
    data_dir: str | Path | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """The rows of benchmark `name` (see the module docstring for how the name resolves)."""
    kind, source = resolve_benchmark(name, data_dir)
    if kind == "file":
        rows = _normalize(_read_file(source), str(source), problem_column, answer_column, None)
    else:
        rows = _load_hub(name, source, problem_column, answer_column)
    if not rows:
        raise UserError(f"benchmark {name!r} has no rows")
    return rows[:limit] if limit else rows


def _read_file(path: Path) -> list[dict]:
    import datasets

    kind = "json" if path.name.endswith(".jsonl.gz") else {".jsonl": "json", ".json": "json", ".parquet": "parquet",
                                                          ".csv": "csv"}.get(path.suffix)
    if kind is None:
        raise UserError(f"benchmark file {path} must end in .jsonl, .jsonl.gz, .json, .parquet or .csv")
    path = bundled_data.verified(path)
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train").to_list()
    except Exception as e:  # noqa: BLE001 - malformed JSON, unreadable parquet...
        raise UserError(f"cannot read benchmark file {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def _load_hub(name: str, spec: HubBenchmark, problem_column: str | None, answer_column: str | None) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.dataset, spec.config, split=spec.split)
    except Exception as e:  # noqa: BLE001 - the hub raises many types; the user needs the cause
        raise UserError(
            f"benchmark {name!r}: no local file and loading {spec.dataset} from the Hugging Face hub failed "
            f"({type(e).__name__}); pass --data-dir with {name}.jsonl or a file path"
        ) from None
    rows = [dict(r) for r in ds]
    if spec.convert_answer is not None and answer_column is None:
        for r in rows:
            r[spec.answer] = spec.convert_answer(r.get(spec.answer))
    return _normalize(rows, spec.dataset, problem_column or spec.problem, answer_column or spec.answer, spec.id_column)


def _pick(columns, wanted: str | None, candidates: tuple[str, ...], what: str, source: str, flag: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise UserError(f"{source}: no column {wanted!r} (columns: {', '.join(columns)}); fix {flag}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise UserError(f"{source}: no {what} column (looked for {', '.join(candidates)}; columns: {', '.join(columns)}); "
                    f"name it with {flag}")


def _normalize(rows: list[dict], source: str, problem_column, answer_column, id_column) -> list[dict]:
    if not rows:
        return []
    columns = list(rows[0])
    problem = _pick(columns, problem_column, PROBLEM_COLUMNS, "problem", source, "--problem-column")
    answer = _pick(columns, answer_column, ANSWER_COLUMNS, "answer", source, "--answer-column")
    id_key = id_column if id_column in columns else ("id" if "id" in columns else None)
    out, seen = [], set()
    for i, row in enumerate(rows):
        gold = row.get(answer)
        if gold is None or str(gold).strip() == "":
            raise UserError(f"{source}: row {i} has an empty {answer!r}; every problem needs a gold answer")
        qid = str(row[id_key]) if id_key else str(i)
        if qid in seen:
            qid = f"{qid}#{i}"  # keep every row distinct: resuming keys on the id
        seen.add(qid)
        out.append(make_question(qid, row[problem], _single(gold)))
    return out
