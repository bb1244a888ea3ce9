"""Benchmark resolution: local data dir, file paths with column overrides, the hub mapping, errors."""

import json

import pytest

from torl import bundled_data
from torl.cli import UserError
from torl.eval import benchmarks as bm
from torl.eval.benchmarks import HF_BENCHMARKS, default_data_dir, load_benchmark


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_shipped_benchmarks_load_by_name(monkeypatch):
    monkeypatch.delenv("TORL_DATA_DIR", raising=False)
    rows = load_benchmark("aime24")
    assert len(rows) == 30 and rows[0]["question_id"] == "aime24-60" and rows[0]["gold"]
    assert len(load_benchmark("math500", limit=3)) == 3
    sizes = {name: len(load_benchmark(name)) for name in bundled_data.BENCHMARK_NAMES}
    assert sizes == {"aime24": 30, "amc23": 40, "math500": 500, "minerva_math": 272, "olympiadbench": 581, "gsm8k": 1319}


def test_default_data_dir_is_the_shipped_one_and_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TORL_DATA_DIR", raising=False)
    assert default_data_dir() == bundled_data.BENCHMARKS_DIR
    monkeypatch.setenv("TORL_DATA_DIR", str(tmp_path))
    write_jsonl(tmp_path / "mine.jsonl", [{"problem": "1+1?", "answer": "2"}])
    assert load_benchmark("mine") == [{"question_id": "0", "problem": "1+1?", "gold": "2"}]


def test_shipped_files_are_the_ones_their_checksums_name():
    listed = set(bundled_data.expected_sha256())
    shipped = {p.relative_to(bundled_data.ROOT).as_posix() for p in bundled_data.ROOT.glob("*/*") if p.is_file()}
    assert listed == shipped == {f"benchmarks/{n}.jsonl" for n in bundled_data.BENCHMARK_NAMES} | {"train/math_train.jsonl.gz"}
    for name in listed:
        assert bundled_data.verified(bundled_data.ROOT / name) == bundled_data.ROOT / name
    notes = (bundled_data.ROOT / "SOURCES.md").read_text()
    assert all(f"{n}.jsonl" in notes for n in bundled_data.BENCHMARK_NAMES) and "licen" in notes.lower()


def test_a_changed_shipped_file_is_refused(monkeypatch, tmp_path):
    import shutil

    copy = tmp_path / "bundled"
    shutil.copytree(bundled_data.ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bundled_data, "ROOT", copy)
    bundled_data.expected_sha256.cache_clear()
    try:
        assert len(load_benchmark("amc23", data_dir=copy / "benchmarks")) == 40  # intact: read
        path = copy / "benchmarks" / "amc23.jsonl"
        path.write_text(path.read_text().replace('"answer": "36"', '"answer": "37"', 1))
        with pytest.raises(UserError, match=r"shipped data file .*amc23.jsonl has sha256 .*restore it"):
            load_benchmark("amc23", data_dir=copy / "benchmarks")
    finally:
        bundled_data.expected_sha256.cache_clear()


def _offline_env(tmp_path) -> dict:
    """No $TORL_DATA_DIR, the hub offline, an empty datasets cache: what a fresh clone without network has."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TORL_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"))
    return env


def test_benchmarks_load_offline_from_anywhere(tmp_path):
    import subprocess
    import sys

    code = ("from torl.eval.benchmarks import load_benchmark, resolve_benchmark\n"
            "print(resolve_benchmark('aime24')[1], len(load_benchmark('aime24')))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(bundled_data.BENCHMARKS_DIR / "aime24.jsonl"), "30"]


@pytest.mark.slow  # a random tiny model, but `torl eval` end to end in a subprocess
def test_a_clone_without_shared_evaluates_aime24_offline(tmp_path):
    """`torl eval --benchmarks aime24` from another directory, no $TORL_DATA_DIR, hub offline: the
    shipped file is what a clone with nothing beside it has."""
    import subprocess
    import sys

    from conftest import save_tiny_llama

    model = save_tiny_llama(tmp_path / "tiny")
    env = _offline_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "torl.cli", "eval", "--model", str(model), "--benchmarks", "aime24", "--limit", "1",
         "--max-tokens", "8", "--max-tool-calls", "0", "--quiet", "--out", str(tmp_path / "out")],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()]
    first = json.loads((bundled_data.BENCHMARKS_DIR / "aime24.jsonl").read_text().splitlines()[0])
    assert len(rows) == 1 and rows[0]["benchmark"] == "aime24"
    assert rows[0]["question_id"] == first["id"] and rows[0]["gold"] == first["answer"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]["aime24"]["problems"] == 1


def test_file_path_with_usual_and_overridden_columns(tmp_path):
    usual = write_jsonl(tmp_path / "q.jsonl", [{"question": "Q1", "final_answer": ["7"]}, {"question": "Q2", "final_answer": ["8"]}])
    assert load_benchmark(str(usual)) == [{"question_id": "0", "problem": "Q1", "gold": "7"}, {"question_id": "1", "problem": "Q2", "gold": "8"}]
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"id": 5, "text": "Q", "target": 3}])
    assert load_benchmark(str(odd), problem_column="text", answer_column="target") == [{"question_id": "5", "problem": "Q", "gold": "3"}]


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"problem": ["P1", "P2"], "answer": ["1", "2"]}), path)
    assert [r["gold"] for r in load_benchmark(str(path))] == ["1", "2"]


def test_gzip_jsonl_file(tmp_path):
    import gzip

    path = tmp_path / "b.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"problem": "P", "answer": "4"}) + "\n")
    assert load_benchmark(str(path)) == [{"question_id": "0", "problem": "P", "gold": "4"}]


def test_duplicate_ids_stay_distinct(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "problem": "a", "answer": "1"}, {"id": 1, "problem": "b", "answer": "2"}])
    assert [r["question_id"] for r in load_benchmark(str(path))] == ["1", "1#1"]


def test_unknown_name_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match=r"unknown benchmark 'nope'.*aime24.*\.jsonl"):
        load_benchmark("nope", data_dir=tmp_path)


def test_missing_file_and_missing_answer_column(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    path = write_jsonl(tmp_path / "noans.jsonl", [{"problem": "Q", "solution": "..."}])
    with pytest.raises(UserError, match=r"no answer column.*--answer-column"):
        load_benchmark(str(path))
    with pytest.raises(UserError, match=r"no column 'gold_x'.*--answer-column"):
        load_benchmark(str(path), answer_column="gold_x")
    empty = write_jsonl(tmp_path / "empty_ans.jsonl", [{"problem": "Q", "answer": ""}])
    with pytest.raises(UserError, match="empty 'answer'"):
        load_benchmark(str(empty))


def test_hub_mapping_reads_the_right_dataset_and_fields(monkeypatch, tmp_path):
    """No hub here: check which dataset/split each name asks for and how its rows are read."""
    import datasets

    calls = []
    fake_rows = {
        "HuggingFaceH4/MATH-500": [{"problem": "P", "answer": "\\frac12", "unique_id": "test/x/1.json"}],
        "math-ai/amc23": [{"id": 3, "question": "Q", "answer": 27.0}],
        "math-ai/olympiadbench": [{"id": 1606, "question": "Q", "final_answer": ["$69$"]}],
        "openai/gsm8k": [{"question": "Q", "answer": "so ... #### 1,200"}],
    }

    def fake_load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(fake_rows[path])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_benchmark("math500", data_dir=tmp_path) == [{"question_id": "test/x/1.json", "problem": "P", "gold": "\\frac12"}]
    assert load_benchmark("amc23", data_dir=tmp_path)[0] == {"question_id": "3", "problem": "Q", "gold": "27.0"}
    assert load_benchmark("olympiadbench", data_dir=tmp_path)[0]["gold"] == "$69$"
    assert load_benchmark("gsm8k", data_dir=tmp_path)[0]["gold"] == "1200"
    assert calls == [("HuggingFaceH4/MATH-500", None, "test"), ("math-ai/amc23", None, "test"),
                     ("math-ai/olympiadbench", None, "test"), ("openai/gsm8k", "main", "test")]
    assert {"aime24", "amc23", "math500", "minerva_math", "olympiadbench"} <= set(HF_BENCHMARKS)


def test_hub_failure_is_one_clear_line(monkeypatch, tmp_path):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"aime24.*HuggingFaceH4/aime_2024.*--data-dir"):
        load_benchmark("aime24", data_dir=tmp_path)


def test_local_file_wins_over_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(bm, "_load_hub", lambda *a: pytest.fail("hub used although a local file exists"))
    write_jsonl(tmp_path / "math500.jsonl", [{"id": "m", "problem": "P", "answer": "1"}])
    assert load_benchmark("math500", data_dir=tmp_path)[0]["question_id"] == "m"
