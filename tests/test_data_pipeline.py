"""The whole pipeline on the MATH training set, its combined report, and the `torl data` CLI."""

import argparse
import json

import pytest

from torl.data.pipeline import (
    PipelineConfig,
    config_from_dict,
    load_config,
    run_pipeline,
)
from torl.data.records import DataError, read_records


def data_cli(argv):
    """Runs `torl data ...` through the package's own register() (what torl.cli wires in)."""
    from torl.data import commands

    parser = argparse.ArgumentParser(prog="torl")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def math_pipeline(shipped_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    config = config_from_dict({  # decontaminated against the shipped benchmarks, the default
        "inputs": [str(shipped_data / "train" / "math_train.jsonl.gz")],
        "output": {"format": "parquet", "template": "torl"},
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TORL_DATA_DIR", raising=False)
        records, stats = run_pipeline(config, out)
    return out, records, stats


@pytest.mark.slow  # the verifier checks ~2,000 distinct MATH answers: about a minute on 2 cores
def test_math_pipeline_counts_add_up(math_pipeline):
    out, records, stats = math_pipeline
    assert stats["n_in"] == 7498
    assert stats["n_in"] == stats["n_out"] + sum(stats["removed"].values())
    assert stats["warnings"] == []  # no stage removes most of MATH
    stages = stats["stages"]
    assert [s["stage"] for s in stages] == ["ingest", "filter", "dedup", "decontam", "output"]
    for s in stages:
        assert s["n_in"] == s["n_out"] + sum(s["removed"].values())
    assert stats["removed"]["filter/multiple_choice"] > 0  # MATH has letter-answer questions
    assert stats["removed"]["dedup/exact_duplicate"] > 0
    decontam = stages[3]
    assert set(decontam["details"]["benchmarks"]) >= {"math500", "aime24", "amc23", "gsm8k"}
    assert decontam["details"]["exact_overlaps"]["math500"] == 0
    assert json.loads((out / "stats.json").read_text())["n_out"] == len(records) == stats["n_out"]
    report = (out / "report.md").read_text()
    assert f"**7498 in = {stats['n_out']} out + {7498 - stats['n_out']} removed**" in report
    assert "examples removed by `multiple_choice`" in report


@pytest.mark.slow
def test_math_pipeline_output_is_what_the_trainer_reads(math_pipeline):
    out, records, _ = math_pipeline
    written = read_records(out / "train.parquet")
    assert written == records
    first = written[0]
    assert first["prompt"].startswith("A conversation between User and Assistant.")
    assert first["prompt"].endswith(first["problem"] + "\nAssistant:\n")
    assert "within \\boxed{}." in first["prompt"]
    assert len({r["id"] for r in written}) == len(written)


def test_config_yaml_and_unknown_keys(tmp_path):
    (tmp_path / "c.yaml").write_text("inputs: [a.jsonl]\nfilter: {proof: {enabled: false}}\ndedup: {near_threshold: 0.9}\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.inputs[0].path == "a.jsonl" and config.filter == {"proof": {"enabled": False}}
    assert config.dedup.near_threshold == 0.9
    with pytest.raises(DataError, match="section 'dedup': unknown key\\(s\\) \\['treshold'\\]"):
        config_from_dict({"dedup": {"treshold": 0.9}})
    with pytest.raises(DataError, match="no inputs given"):
        run_pipeline(PipelineConfig(), tmp_path / "out")


def test_cli_stages_chain(tmp_path, monkeypatch):
    raw = tmp_path / "raw.jsonl"
    rows = [
        {"problem": "What is $6 \\times 7$?", "solution": "It is $\\boxed{42}$."},
        {"problem": "what is 6 \\times 7?", "solution": "$\\boxed{42}$"},
        {"problem": "Prove that $2 > 1$.", "solution": "Obvious. $\\boxed{\\text{proof}}$"},
        {"problem": "Compute $2^{10}$.", "solution": "$2^{10} = \\boxed{1024}$"},
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    assert data_cli(["ingest", "--input", str(raw), "--out", str(tmp_path / "i"), "--skip-malformed"]) == 0
    ingest_stats = json.loads((tmp_path / "i" / "stats.json").read_text())
    assert ingest_stats["removed"] == {"malformed_row": 1} and ingest_stats["n_out"] == 4
    assert data_cli(["filter", "--input", str(tmp_path / "i" / "data.jsonl"), "--out", str(tmp_path / "f")]) == 0
    assert data_cli(["dedup", "--input", str(tmp_path / "f" / "data.jsonl"), "--out", str(tmp_path / "d")]) == 0
    monkeypatch.delenv("TORL_DATA_DIR", raising=False)  # the shipped math500
    assert data_cli(["decontam", "--input", str(tmp_path / "d" / "data.jsonl"), "--benchmarks", "math500",
                     "--out", str(tmp_path / "c")]) == 0
    final = read_records(tmp_path / "c" / "data.jsonl")
    assert [r["answer"] for r in final] == ["42", "1024"]
    assert data_cli(["export", "--input", str(tmp_path / "c" / "data.jsonl"), "--template", "torl",
                     "--out", str(tmp_path / "train.jsonl")]) == 0
    assert all("prompt" in r for r in read_records(tmp_path / "train.jsonl"))
    assert data_cli(["synth", "--kinds", "modexp", "--n", "5", "--out", str(tmp_path / "s.jsonl")]) == 0
    assert len(read_records(tmp_path / "s.jsonl")) == 5


def test_cli_pipeline_and_user_errors(tmp_path):
    from torl.cli import UserError

    src = tmp_path / "gsm.jsonl"
    src.write_text(json.dumps({"question": "Tom has 3 apples and buys 4. How many now?", "answer": "3+4=7\n#### 7"}) + "\n")
    assert data_cli(["pipeline", "--input", str(src), "--out", str(tmp_path / "p"), "--no-decontam"]) == 0
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert stats["n_in"] == 1 == stats["n_out"]
    with pytest.raises(UserError, match="input not found"):
        data_cli(["pipeline", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "q")])
    with pytest.raises(UserError, match="unknown column 'nope'"):
        data_cli(["ingest", "--input", str(src), "--map", "problem=nope", "--out", str(tmp_path / "r")])


def test_cli_pipeline_on_your_own_question_answer_file(tmp_path, capsys):
    src = tmp_path / "mine.jsonl"
    rows = [{"question": "What is $2+3$?", "answer": "5"}, {"question": "Solve $x+1=3$ for $x$.", "answer": "2"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for extra in ([], ["--map", "problem=question,answer=answer"]):
        out = tmp_path / f"p{len(extra)}"
        assert data_cli(["pipeline", "--input", str(src), "--out", str(out), "--no-decontam", *extra]) == 0
        assert [(r["problem"], r["answer"]) for r in read_records(out / "train.jsonl")] == [(r["question"], r["answer"]) for r in rows]
        assert json.loads((out / "stats.json").read_text())["warnings"] == []
    assert "torl: warning" not in capsys.readouterr().err


def test_a_stage_that_drops_most_rows_says_so_and_why(tmp_path, capsys):
    src = tmp_path / "proofs.jsonl"
    rows = [{"problem": f"Prove that {n} is not a square of an integer.", "answer": "\\text{proof}"} for n in (2, 3, 5)]
    rows.append({"problem": "What is $7 \\times 8$?", "answer": "56"})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert data_cli(["pipeline", "--input", str(src), "--out", str(tmp_path / "p"), "--no-decontam"]) == 0
    err = capsys.readouterr().err
    assert "torl: warning: filter removed 3 of 4 rows (75%): proof 3 (first proof: why: matched 'Prove')" in err
    stats = json.loads((tmp_path / "p" / "stats.json").read_text())
    assert stats["removed"] == {"filter/proof": 3} and stats["n_out"] == 1
    assert stats["warnings"] == [err.strip().removeprefix("torl: warning: ")]
    assert "**Warning: filter removed 3 of 4 rows" in (tmp_path / "p" / "report.md").read_text()
    # a plain question/answer file read as GSM8K (forced): ingest removes every row, counts them and says why
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "What is $7 \\times 8$?", "answer": "56"}) + "\n")
    assert data_cli(["ingest", "--input", str(plain), "--map", "answer_format=gsm8k", "--out", str(tmp_path / "i")]) == 0
    captured = capsys.readouterr()
    assert "ingest: 1 in, 0 out (no_answer: 1)" in captured.out
    assert "torl: warning: ingest of" in captured.err and "removed all 1 row: no_answer 1" in captured.err
    assert "--map answer_format=plain" in captured.err
    assert json.loads((tmp_path / "i" / "stats.json").read_text())["removed"] == {"no_answer": 1}


def test_baked_prompts_are_the_trainers_templates():
    from torl.data.templates import apply_template
    from torl.tir.templates import get_template

    question = "What is $\\frac{1}{2} + 1$?"
    for name in ("torl", "torl_fewshot"):
        assert apply_template(name, question) == get_template(name).render(question)
    assert apply_template("torl", question).endswith(f"\\boxed{{}}.\n{question}\nAssistant:\n")
    with pytest.raises(DataError, match="chat template"):
        apply_template("chat", question)
    with pytest.raises(DataError, match="unknown prompt template 'nope'"):
        apply_template("nope", question)


def test_records_and_questions_convert_both_ways():
    from torl.data.records import make_record, question_to_record, record_to_question

    record = make_record(id=7, problem="1+1?", answer=2, source="t")
    question = record_to_question(record)
    assert question == {"question_id": "7", "problem": "1+1?", "gold": "2"}  # training's names, all text
    assert question_to_record(question, source="t") == {"id": "7", "problem": "1+1?", "answer": "2", "source": "t"}
