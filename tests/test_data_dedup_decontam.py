"""Deduplication and benchmark decontamination, on toy data and on the real MATH/MATH-500 split."""

import random

import pytest

from torl.data.decontam import decontaminate, load_benchmark, resolve_benchmark
from torl.data.dedup import deduplicate
from torl.data.records import DataError, read_records

LONG = ("A bag contains 5 red marbles, 7 blue marbles and 3 green marbles. Two marbles are drawn at "
        "random without replacement. What is the probability that both marbles are the same color?")


def rec(id_, problem, answer="1"):
    return {"id": id_, "problem": problem, "answer": answer, "source": "t"}


def test_exact_duplicates_ignore_case_spacing_and_dollars():
    records = [rec("a", "What is $2+2$?"), rec("b", "what is 2 + 2?", "5"), rec("c", "What is 3+3?")]
    kept, report = deduplicate(records, near=False)
    assert [r["id"] for r in kept] == ["a", "c"]
    assert report.removed == {"exact_duplicate": 1}
    assert report.examples["exact_duplicate"][0]["duplicate_of"] == "a"
    assert report.details["different_answer"]["exact_duplicate"] == 1


def test_near_duplicates_keep_the_first_and_spare_different_problems():
    edited = LONG.replace("marbles are drawn", "marbles are picked")
    records = [rec("a", LONG), rec("b", edited), rec("c", "Compute $\\binom{10}{3}$."),
               rec("d", "How many positive divisors does 360 have?")]
    kept, report = deduplicate(records)
    assert [r["id"] for r in kept] == ["a", "c", "d"]
    assert report.removed == {"near_duplicate": 1}
    assert report.examples["near_duplicate"][0]["duplicate_of"] == "a"
    assert report.examples["near_duplicate"][0]["jaccard"] >= 0.8
    kept, _ = deduplicate(records, near_threshold=1.0)  # stricter threshold keeps the edit
    assert len(kept) == 4


def test_bad_dedup_parameters():
    with pytest.raises(DataError, match="near_threshold"):
        deduplicate([], near_threshold=0)


@pytest.fixture(scope="module")
def math_train(shipped_data):
    return read_records(shipped_data / "train" / "math_train.jsonl.gz")


@pytest.fixture(scope="module")
def math500(shipped_data):
    return load_benchmark(str(shipped_data / "benchmarks" / "math500.jsonl"))[1]


def test_math_train_dedup_counts_add_up(math_train):
    kept, report = deduplicate(math_train)
    assert report.n_in == 7498 == len(kept) + sum(report.removed.values())
    assert report.removed["exact_duplicate"] >= 1  # MATH train has a few verbatim repeats
    assert len({r["id"] for r in kept}) == len(kept)


@pytest.fixture(scope="module")
def clean_decontam(math_train, math500):
    return decontaminate(math_train, {"math500": math500})[1]


def test_math_train_has_no_exact_overlap_with_math500(clean_decontam):
    report = clean_decontam
    assert report.details["exact_overlaps"] == {"math500": 0}
    assert not any(r["exact"] for r in report.details["removed"]["math500"])


def lightly_edit(problem: str, rng: random.Random) -> str:
    """A copy someone might not notice: reworded start, one word changed, respaced, new ending."""
    words = problem.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3]
    if candidates:
        i = rng.choice(candidates)
        words[i] = words[i][::-1]
    return "Solve the following. " + "  ".join(words).replace("$", " $ ") + " Show your work."


def test_planted_near_copies_of_math500_are_all_found(math_train, math500, clean_decontam):
    rng = random.Random(0)
    planted = [rec(f"planted-{b['id']}", lightly_edit(b["problem"], rng)) for b in math500]
    kept, report = decontaminate(math_train + planted, {"math500": math500})
    removed = {r["id"]: r["benchmark_id"] for r in report.details["removed"]["math500"]}
    missed = [p["id"] for p in planted if p["id"] not in removed]
    assert missed == []
    assert all(removed[f"planted-{b['id']}"] == b["id"] for b in math500)  # matched to its source
    # the clean training rows flagged are the same with or without the planted copies
    assert len(removed) - len(planted) == clean_decontam.removed.get("contaminated:math500", 0)
    assert report.n_in == len(kept) + sum(report.removed.values())


def test_benchmark_overlap_is_reported_per_benchmark():
    aime = load_benchmark("aime24")[1]
    gsm = load_benchmark("gsm8k")[1]
    records = [rec("x", aime[0]["problem"]), rec("y", "Prefix. " + gsm[3]["problem"]), rec("z", LONG)]
    kept, report = decontaminate(records, {"aime24": aime, "gsm8k": gsm})
    assert [r["id"] for r in kept] == ["z"]
    assert report.removed == {"contaminated:aime24": 1, "contaminated:gsm8k": 1}
    assert report.details["exact_overlaps"] == {"aime24": 1, "gsm8k": 0}
    assert report.details["removed"]["gsm8k"][0]["benchmark_id"] == gsm[3]["id"]


def test_benchmarks_resolve_by_name_and_errors(shipped_data, tmp_path, monkeypatch):
    monkeypatch.delenv("TORL_DATA_DIR", raising=False)
    assert resolve_benchmark("amc23") == ("amc23", shipped_data / "benchmarks" / "amc23.jsonl")  # shipped by default
    (tmp_path / "amc23.jsonl").write_text('{"problem": "p", "answer": "1"}\n')
    assert resolve_benchmark("amc23", tmp_path) == ("amc23", tmp_path / "amc23.jsonl")  # --benchmark-dir
    monkeypatch.setenv("TORL_DATA_DIR", str(tmp_path))
    assert resolve_benchmark("amc23") == ("amc23", tmp_path / "amc23.jsonl")  # $TORL_DATA_DIR
    with pytest.raises(DataError, match=r"benchmark 'nope' not found: .*benchmarks there: amc23\); .*--benchmark-dir"):
        resolve_benchmark("nope", tmp_path)
    with pytest.raises(DataError, match="threshold"):
        decontaminate([], {"x": []}, threshold=1.5)
