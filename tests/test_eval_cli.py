"""`torl eval` from the command line: a real small model (slow), and the one-line user errors."""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from torl.cli import UserError
from torl.eval.commands import register


def parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


@pytest.mark.slow
def test_eval_smollm2_on_two_benchmarks(tmp_path, shipped_data, capsys):
    out = tmp_path / "out"
    args = parse(["--model", "smollm2-135m", "--benchmarks", "gsm8k,math500", "--limit", "2", "--max-tokens", "48", "--data-dir", str(shipped_data / "benchmarks"), "--out", str(out),
                  "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "GSM8K" in printed and "MATH500" in printed and "Average" in printed
    rows = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["benchmark"] for r in rows} == {"gsm8k", "math500"}
    for r in rows:
        assert r["trajectory"]["text"] and r["trajectory"]["completion_tokens"] <= 48
        assert r["correct"] in (True, False) and r["reason"]
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"gsm8k", "math500"} and results["benchmarks"]["gsm8k"]["problems"] == 2
    analytics = json.loads((out / "analytics.json").read_text())
    assert analytics["math500"]["responses"] == 2 and analytics["gsm8k"]["code_ratio"] is not None
    assert "| Model | GSM8K | MATH500 | Average |" in (out / "results.md").read_text()
    # the same command again resumes: nothing is redone
    assert args.func(args) == 0
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 4


def test_unknown_benchmark_is_a_user_error(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("loaded data before checking every name"))
    args = parse(["--model", "m", "--benchmarks", "aime24,nope", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        args.func(args)


def test_missing_answer_column_is_a_user_error(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"problem": "Q", "solution": "S"}) + "\n")
    args = parse(["--model", "m", "--benchmarks", str(path), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="no answer column"):
        args.func(args)


@pytest.fixture
def models_server():
    """A minimal OpenAI-compatible /v1/models endpoint serving one model."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "served-model", "object": "model"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_openai_engine_errors_are_one_line(tmp_path, shipped_data, models_server):
    common = ["--benchmarks", "aime24", "--limit", "1", "--max-tool-calls", "0", "--quiet",
              "--data-dir", str(shipped_data / "benchmarks"), "--engine", "openai"]
    args = parse(["--model", "x", *common, "--out", str(tmp_path / "a"), "--base-url", "http://127.0.0.1:9/v1"])
    with pytest.raises(UserError, match="cannot reach the OpenAI-compatible server at http://127.0.0.1:9/v1"):
        args.func(args)
    args = parse(["--model", "other", *common, "--out", str(tmp_path / "b"), "--base-url", models_server])
    with pytest.raises(UserError, match="serves served-model, not 'other'"):
        args.func(args)
    args = parse(["--model", "x", *common, "--out", str(tmp_path / "c")])
    with pytest.raises(UserError, match="needs --base-url"):
        args.func(args)
    args = parse(["--model", "x", *common[:-2], "--out", str(tmp_path / "d"), "--base-url", models_server])
    with pytest.raises(UserError, match="--base-url only applies to --engine openai"):
        args.func(args)
