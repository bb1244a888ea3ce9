"""Decontaminate: remove training questions that overlap an evaluation benchmark.

Overlap is measured on word/symbol token n-grams (the tokens of torl.data.dedup): a training
problem is removed when the shared n-grams cover at least `threshold` of the shorter of the two
problems' n-gram sets (the overlap coefficient), so both a benchmark problem pasted inside a
longer training problem and a lightly edited copy are caught. A problem shorter than n tokens is
a single n-gram, i.e. it only matches exactly. Exact matches (same normalized text) are reported
separately from n-gram matches.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from torl import bundled_data
from torl.data.dedup import normalize_text, tokens
from torl.data.records import DataError
from torl.data.report import StageReport


def ngrams(text: str | list[str], n: int) -> set[str]:
    """Token n-grams of `text` (or of a token list); the whole sequence when shorter than n."""
    toks = tokens(text) if isinstance(text, str) else text
    if len(toks) <= n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def gram_size(n_tokens: int, n: int, min_n: int) -> int:
    """n-gram size for a benchmark problem: `n`, smaller for short problems (a quarter of their
    length, at least `min_n`) so that one edited word cannot hide a short copied problem."""
    return max(min_n, min(n, n_tokens // 4))


def resolve_benchmark(spec: str, benchmark_dir: str | Path | None = None) -> tuple[str, Path]:
    """A benchmark name (`math500`, read as `<dir>/math500.jsonl`) or a file path → (name, path).

    The folder is `benchmark_dir`, else ``$TORL_DATA_DIR``, else the benchmarks shipped with torl.
    """
    path = Path(spec)
    if path.is_file():
        return path.stem, path
    folder = bundled_data.benchmark_dir(benchmark_dir)
    candidate = folder / f"{spec}.jsonl"
    if candidate.is_file():
        return spec, candidate
    there = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
    raise DataError(
        f"benchmark {spec!r} not found: no {candidate} (benchmarks there: {', '.join(there) or 'none'}); "
        f"pass a file path, or a folder of <name>.jsonl files with --benchmark-dir or ${bundled_data.DATA_DIR_ENV}"
    )


def load_benchmark(spec: str, benchmark_dir: str | Path | None = None) -> tuple[str, list[dict]]:
    """Loads a benchmark's rows as {"id", "problem"} using ingest's readers and schema detection."""
    from torl.data.ingest import read_raw, resolve_schema

    name, path = resolve_benchmark(spec, benchmark_dir)
    raw = read_raw(str(path))
    bad = [(loc, r) for loc, r in raw.rows if not isinstance(r, dict)]
    if bad:
        raise DataError(f"{bad[0][0]}: malformed benchmark row: {bad[0][1]}")
    if not raw.rows:
        raise DataError(f"benchmark file {path} is empty")
    rows = [r for _, r in raw.rows]
    schema = resolve_schema(set().union(*(r.keys() for r in rows)), None, str(path))
    out = []
    for i, r in enumerate(rows):
        problem = r.get(schema.problem)
        if not isinstance(problem, str) or not problem.strip():
            raise DataError(f"{path} row {i}: benchmark row has no {schema.problem!r} text")
        out.append({"id": str(r.get(schema.id) if schema.id and r.get(schema.id) is not None else i),
                    "problem": problem})
    return name, out


def decontaminate(
    records: list[dict],
    benchmarks: list[str] | dict[str, list[dict]],
    n: int = 8,
    threshold: float = 0.5,
    min_n: int = 3,
    benchmark_dir: str | Path | None = None,
) -> tuple[list[dict], StageReport]:
    """Removes records whose problem overlaps a benchmark problem; the report's `removed` is keyed
    `contaminated:<benchmark>` and `details.removed` lists each removed id with its match."""
    if n < 1:
        raise DataError(f"n-gram size must be >= 1, got {n}")
    if not 0.0 < threshold <= 1.0:
        raise DataError(f"overlap threshold must be in (0, 1], got {threshold}")
    start = time.perf_counter()
    if not isinstance(benchmarks, dict):
        benchmarks = dict(load_benchmark(b, benchmark_dir) for b in benchmarks)
    if not benchmarks:
        raise DataError("no benchmarks to decontaminate against; name at least one (e.g. math500)")

    if not 1 <= min_n <= n:
        raise DataError(f"min_n must be in [1, n={n}], got {min_n}")
    index: dict[str, list[int]] = defaultdict(list)
    bench_docs: list[tuple[str, dict, int, str]] = []  # (benchmark, row, n-gram count, normalized)
    exact_index: dict[str, int] = {}
    sizes: set[int] = set()
    for name, rows in benchmarks.items():
        for row in rows:
            toks = tokens(row["problem"])
            size = gram_size(len(toks), n, min_n)
            sizes.add(size)
            grams = ngrams(toks, size)
            doc = len(bench_docs)
            bench_docs.append((name, row, len(grams), normalize_text(row["problem"])))
            exact_index.setdefault(bench_docs[-1][3], doc)
            for g in grams:
                index[g].append(doc)

    report = StageReport("decontam", n_in=len(records), details={
        "n": n, "threshold": threshold,
        "benchmarks": {name: len(rows) for name, rows in benchmarks.items()},
        "exact_overlaps": {name: 0 for name in benchmarks},
        "removed": {name: [] for name in benchmarks},
    })
    kept = []
    for r in records:
        exact_doc = exact_index.get(normalize_text(r["problem"]))
        toks = tokens(r["problem"])
        hits = Counter(doc for size in sizes for g in ngrams(toks, size) for doc in index.get(g, ()))
        best, best_overlap = None, 0.0
        for doc, shared in hits.items():
            overlap = shared / max(1, bench_docs[doc][2])
            if overlap > best_overlap:
                best, best_overlap = doc, overlap
        if exact_doc is not None:
            best, best_overlap = exact_doc, 1.0
        if best is None or best_overlap < threshold:
            kept.append(r)
            continue
        name, row, _, _ = bench_docs[best]
        report.remove(f"contaminated:{name}", r, benchmark_id=row["id"], overlap=round(best_overlap, 3),
                      benchmark_problem=row["problem"])
        report.details["exact_overlaps"][name] += exact_doc is not None
        report.details["removed"][name].append(
            {"id": r["id"], "benchmark_id": row["id"], "overlap": round(best_overlap, 3), "exact": exact_doc is not None})
    return kept, report.finish(len(kept), time.perf_counter() - start)
