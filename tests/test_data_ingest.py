"""Ingest: schema detection, answer extraction, formats, and clear errors on bad input."""

import csv
import json

import pytest

from torl.data.ingest import InputSpec, detect_schema, ingest, parse_mapping
from torl.data.records import DataError, read_records, write_records


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


MATH_ROWS = [
    {"problem": "What is $1+1$?", "solution": "Clearly $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {"problem": "Simplify $\\frac{2}{4}$.", "solution": "We get $\\boxed{\\frac{1}{2}}$.", "level": "Level ?", "type": "Prealgebra"},
]


def test_math_schema_takes_last_boxed_answer_and_parses_level(tmp_path):
    records, report = ingest([str(write_jsonl(tmp_path / "math.jsonl", MATH_ROWS))])
    assert [r["answer"] for r in records] == ["2", "\\frac{1}{2}"]
    assert records[0] == {"id": "math-0", "problem": "What is $1+1$?", "answer": "2", "source": "math",
                          "level": 1, "subject": "Algebra", "solution": "Clearly $1+1=\\boxed{2}$."}
    assert "level" not in records[1]  # "Level ?" has no level
    assert report.details["inputs"][0]["schema"] == "problem-solution"
    assert report.details["inputs"][0]["answers_from_solution"] == 2


def test_gsm8k_answer_after_hashes_commas_removed(tmp_path):
    rows = [{"question": "How many?", "answer": "First 1,000 + 234.\n#### 1,234"}]
    records, report = ingest([str(write_jsonl(tmp_path / "gsm.jsonl", rows))])
    assert records[0]["answer"] == "1234"
    assert records[0]["problem"] == "How many?"
    assert records[0]["solution"] == "First 1,000 + 234."
    assert report.details["inputs"][0]["schema"] == "gsm8k"


def test_deepscaler_and_numina_schemas(tmp_path):
    deepscaler = [{"problem": "Find $x$.", "answer": "$5$", "solution": "... \\boxed{5}"}]
    numina = [{"problem": "Find $y$.", "solution": "So $y=\\boxed{7}$.", "source": "olympiads", "messages": []}]
    recs, _ = ingest([str(write_jsonl(tmp_path / "dsr.jsonl", deepscaler)),
                      str(write_jsonl(tmp_path / "numina.jsonl", numina))])
    assert recs[0]["answer"] == "5"  # surrounding $ stripped
    assert recs[1]["answer"] == "7" and recs[1]["source"] == "numina/olympiads"


def test_detect_schema_unknown_columns_is_none():
    assert detect_schema({"text", "label"}) is None
    assert detect_schema({"id", "problem", "answer", "source"}).keep_ids


def test_normalized_file_round_trips_unchanged(shipped_data, tmp_path):
    rows = [json.loads(line) for line in (shipped_data / "benchmarks" / "aime24.jsonl").open()][:5]
    records, _ = ingest([str(write_jsonl(tmp_path / "aime.jsonl", rows))])
    assert records == rows


def test_user_mapping_and_answer_format(tmp_path):
    rows = [{"q": "2+2?", "final": "\\boxed{4}", "uid": "a"}]
    path = str(write_jsonl(tmp_path / "custom.jsonl", rows))
    mapping = parse_mapping("problem=q, answer=final, id=uid, answer_format=boxed")
    records, report = ingest([InputSpec(path, mapping=mapping, source="mine")])
    assert records == [{"id": "mine-a", "problem": "2+2?", "answer": "4", "source": "mine"}]
    assert report.details["inputs"][0]["schema"] == "user+user"


def test_csv_parquet_and_json_array(tmp_path):
    with (tmp_path / "t.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["problem", "answer"])
        w.writerow(["What is 3*3?", "9"])
    (tmp_path / "t.json").write_text(json.dumps([{"problem": "1+2?", "answer": 3}]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "2*5?", "answer": "10"}]), tmp_path / "t.parquet")
    records, _ = ingest([str(tmp_path / n) for n in ("t.csv", "t.json", "t.parquet")])
    assert [(r["problem"], r["answer"]) for r in records] == [("What is 3*3?", "9"), ("1+2?", "3"), ("2*5?", "10")]


def test_datasets_save_to_disk_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"problem": "p?", "answer": "1"}]).save_to_disk(str(tmp_path / "ds"))
    records, _ = ingest([str(tmp_path / "ds")])
    assert records[0]["answer"] == "1"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="input not found: .*nope.jsonl"):
        ingest([str(tmp_path / "nope.jsonl")])


def test_unknown_mapped_column_names_the_column(tmp_path):
    path = str(write_jsonl(tmp_path / "a.jsonl", [{"problem": "x", "answer": "1"}]))
    with pytest.raises(DataError, match="unknown column 'question_text'.*columns are \\['answer', 'problem'\\]"):
        ingest([InputSpec(path, mapping={"problem": "question_text"})])


def test_undetectable_schema_asks_for_a_mapping(tmp_path):
    path = str(write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "label": "1"}]))
    with pytest.raises(DataError, match="--map problem=COLUMN"):
        ingest([path])


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        ingest([str(tmp_path / "empty.jsonl")])


def test_malformed_row_stops_naming_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed row: invalid JSON"):
        ingest([str(path)])


def test_skipped_malformed_rows_are_counted_with_locations(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n[1, 2]\nnot json\n'
                    '{"problem": "c", "answer": [1, 2]}\n{"problem": "d", "answer": "4"}\n')
    records, report = ingest([str(path)], on_malformed="skip")
    assert [r["problem"] for r in records] == ["a", "d"]
    assert report.removed == {"malformed_row": 3}
    assert report.n_in == 5 == report.n_out + 3
    wheres = [ex["where"] for ex in report.examples["malformed_row"]]
    assert wheres == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "list of 2 items" in report.examples["malformed_row"][2]["reason"]


def test_rows_without_answer_are_removed_and_counted_with_the_reason(tmp_path):
    rows = [{"problem": "p", "solution": "no box here"}, {"problem": "q", "solution": "\\boxed{1}"},
            {"problem": " ", "solution": "\\boxed{2}"}]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    records, report = ingest([str(path)])
    assert [r["answer"] for r in records] == ["1"]
    assert report.removed == {"no_answer": 1, "no_problem": 1} and report.n_in == 3 == report.n_out + 2
    assert report.examples["no_answer"][0]["where"] == f"{path}:1"
    assert "no \\boxed{} in column 'solution'" in report.examples["no_answer"][0]["why"]
    assert report.details["inputs"][0]["answers_missing"] == 1
    assert report.warnings  # 2 of 3 rows gone: most of them


# Your own data, in the two plain shapes the README documents.
OWN_ROWS = [{"answer": "5", "id": 7}, {"answer": "x=2"}, {"answer": "$\\frac{1}{2}$"}]
OWN_PROBLEMS = ["What is 2+3?", "Solve $x+1=3$.", "Half of 1?"]


@pytest.mark.parametrize("column", ["question", "problem"])
def test_own_question_or_problem_answer_file_ingests_as_itself(tmp_path, column):
    rows = [{column: p, **r} for p, r in zip(OWN_PROBLEMS, OWN_ROWS)]
    records, report = ingest([str(write_jsonl(tmp_path / "mine.jsonl", rows))])
    assert [(r["problem"], r["answer"]) for r in records] == list(zip(OWN_PROBLEMS, ["5", "x=2", "\\frac{1}{2}"]))
    assert [r["id"] for r in records] == ["mine-7", "mine-1", "mine-2"] and {r["source"] for r in records} == {"mine"}
    assert report.removed == {} and report.warnings == [] and report.n_out == 3
    assert report.details["inputs"][0]["answer_format"] == "plain"


def test_own_question_answer_file_with_an_explicit_mapping(tmp_path):
    rows = [{"question": p, **r} for p, r in zip(OWN_PROBLEMS, OWN_ROWS)]
    path = str(write_jsonl(tmp_path / "mine.jsonl", rows))
    records, report = ingest([InputSpec(path, mapping=parse_mapping("problem=question,answer=answer"))])
    assert [(r["problem"], r["answer"]) for r in records] == list(zip(OWN_PROBLEMS, ["5", "x=2", "\\frac{1}{2}"]))
    assert report.removed == {}


def test_gsm8k_answers_are_told_from_their_values_not_the_column_names(tmp_path):
    rows = [{"question": "A?", "answer": "2+2=4\n#### 4"}, {"question": "B?", "answer": "so\n#### 1,000"}]
    records, report = ingest([str(write_jsonl(tmp_path / "g.jsonl", rows))])
    assert [r["answer"] for r in records] == ["4", "1000"] and report.details["inputs"][0]["schema"] == "gsm8k"
    rows = [{"problem": "C?", "answer": "so\n#### 12"}]  # GSM8K-style answers under other column names
    records, report = ingest([str(write_jsonl(tmp_path / "h.jsonl", rows))])
    assert records[0]["answer"] == "12" and report.details["inputs"][0]["answer_format"] == "gsm8k"


def test_an_ingest_that_drops_every_row_says_why(tmp_path):
    rows = [{"question": p, **r} for p, r in zip(OWN_PROBLEMS, OWN_ROWS)]
    path = str(write_jsonl(tmp_path / "mine.jsonl", rows))
    records, report = ingest([InputSpec(path, mapping={"answer_format": "gsm8k"})])  # the wrong format, forced
    assert records == [] and report.removed == {"no_answer": 3} and report.n_in == 3
    [warning] = report.warnings
    assert warning.startswith(f"ingest of {path} (schema question-answer) removed all 3 rows: no_answer 3")
    assert "no '####' in column 'answer'" in warning and "--map answer_format=plain" in warning
    # one bad input among good ones: the stage as a whole keeps most rows, the input still warns
    good = str(write_jsonl(tmp_path / "good.jsonl", [{"problem": f"{n}+1?", "answer": str(n + 1)} for n in range(5)]))
    records, report = ingest([good, InputSpec(path, mapping={"answer_format": "gsm8k"})])
    assert len(records) == 5 and report.removed == {"no_answer": 3}
    assert [w.split(" removed ")[0] for w in report.warnings] == [f"ingest of {path} (schema question-answer)"]


def test_clashing_ids_are_renamed_not_dropped(tmp_path):
    rows = [{"id": "x", "problem": "a", "answer": "1", "source": "s"},
            {"id": "x", "problem": "b", "answer": "2", "source": "s"}]
    records, report = ingest([str(write_jsonl(tmp_path / "d.jsonl", rows))])
    assert [r["id"] for r in records] == ["x", "x#2"]
    assert report.details["inputs"][0]["renamed_ids"] == 1


def test_write_and_read_records_parquet_round_trip(tmp_path):
    recs = [{"id": "a", "problem": "p", "answer": "1", "source": "s", "level": 3},
            {"id": "b", "problem": "q", "answer": "2", "source": "s"}]
    write_records(recs, tmp_path / "r.parquet")
    assert read_records(tmp_path / "r.parquet") == recs
    with pytest.raises(DataError, match="lacks \\['answer'\\]"):
        write_jsonl(tmp_path / "raw.jsonl", [{"id": "a", "problem": "p", "source": "s"}])
        read_records(tmp_path / "raw.jsonl")
