"""Deduplicate: exact duplicates (same normalized text) and near duplicates (MinHash/LSH).

The first occurrence is kept. Near duplicates are found with datasketch's MinHashLSH and then
confirmed with the exact Jaccard similarity of the two shingle sets, so the decision does not
depend on MinHash sampling noise. Duplicates whose gold answers differ are counted separately in
the report: they are often the same wording with changed numbers, which a user may want to keep
(raise `near_threshold` to keep more of them).
"""

from __future__ import annotations

import re
import time
import unicodedata

from torl.data.records import DataError
from torl.data.report import StageReport

_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize_text(text: str) -> str:
    """Case, Unicode form, `$` delimiters and whitespace do not make a problem different."""
    text = unicodedata.normalize("NFKC", text).lower().replace("$", "")
    return re.sub(r"\s+", "", text)


def tokens(text: str) -> list[str]:
    """Lower-cased word and symbol tokens, `$` dropped (shared with decontamination)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower().replace("$", " "))


def shingles(text: str, size: int) -> set[str]:
    """Overlapping token `size`-grams; a text shorter than `size` is one shingle."""
    toks = tokens(text)
    if len(toks) <= size:
        return {" ".join(toks)}
    return {" ".join(toks[i : i + size]) for i in range(len(toks) - size + 1)}


def deduplicate(
    records: list[dict],
    exact: bool = True,
    near: bool = True,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 3,
    seed: int = 1,
) -> tuple[list[dict], StageReport]:
    """Removes exact then near duplicates of `problem`, keeping the first of each group."""
    if not 0.0 < near_threshold <= 1.0:
        raise DataError(f"near_threshold must be in (0, 1], got {near_threshold}")
    if shingle_size < 1 or num_perm < 16:
        raise DataError("shingle_size must be >= 1 and num_perm >= 16")
    start = time.perf_counter()
    report = StageReport("dedup", n_in=len(records), details={
        "exact": exact, "near": near, "near_threshold": near_threshold, "num_perm": num_perm,
        "shingle_size": shingle_size, "different_answer": {"exact_duplicate": 0, "near_duplicate": 0}})
    diff = report.details["different_answer"]

    kept: list[dict] = []
    first_by_text: dict[str, dict] = {}
    for r in records:
        key = normalize_text(r["problem"])
        original = first_by_text.get(key) if exact else None
        if original is not None:
            report.remove("exact_duplicate", r, duplicate_of=original["id"])
            diff["exact_duplicate"] += original["answer"] != r["answer"]
        else:
            first_by_text.setdefault(key, r)
            kept.append(r)

    if near and kept:
        kept = _near_dedup(kept, report, near_threshold, num_perm, shingle_size, seed)
    return kept, report.finish(len(kept), time.perf_counter() - start)


def _near_dedup(records: list[dict], report: StageReport, threshold: float, num_perm: int,
                shingle_size: int, seed: int) -> list[dict]:
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(r["problem"], shingle_size) for r in records]
    hashes = MinHash.bulk([[s.encode() for s in sh] for sh in sets], num_perm=num_perm, seed=seed)
    # LSH only proposes candidates; a lower LSH threshold finds more of them (recall), and the
    # exact Jaccard check below decides.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm)
    kept = []
    for i, (r, mh) in enumerate(zip(records, hashes)):
        best, best_j = None, 0.0
        for j in lsh.query(mh):
            a, b = sets[i], sets[j]
            jac = len(a & b) / len(a | b)
            if jac > best_j:
                best, best_j = j, jac
        if best is not None and best_j >= threshold:
            original = records[best]
            report.remove("near_duplicate", r, duplicate_of=original["id"], jaccard=round(best_j, 3),
                          original_problem=original["problem"])
            report.details["different_answer"]["near_duplicate"] += original["answer"] != r["answer"]
        else:
            lsh.insert(i, mh)
            kept.append(r)
    return kept
