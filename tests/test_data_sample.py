"""`torl data sample`: rejection sampling of TIR trajectories.

Scripted model responses (ScriptedEngine) through the real TIR loop, the real local sandbox and the
real verifier; a short real run with SmolLM2 (slow); a teacher endpoint that is down or answers
garbage (a fake OpenAI-compatible server on 127.0.0.1) is one line and leaves nothing written.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from torl.cli import main
from torl.data.sample import (
    DATA_FILE,
    SampleConfig,
    SampleFilters,
    load_questions,
    sample_questions,
    write_outputs,
)
from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.errors import UserError
from torl.sandbox.base import SandboxWrapper
from torl.sandbox.result import ExecResult, ExecStatus
from torl.tir.task import TaskSpec

CODE = "```python\nprint(6*7)\n```\n```output"
# Question "a" (6*7 = 42): the i-th sample asked for gets variant i, so every filter sees its case.
# (turn 0, turn 1 or None when turn 0 ends the response, why it is dropped or None when kept)
VARIANTS = [
    ("(v0) Compute it.\n" + CODE, "So \\boxed{42}.", None),
    ("(v0) Compute it.\n" + CODE, "So \\boxed{42}.", "duplicate"),             # the same text as v0
    ("(v2) 6*7 is \\boxed{42}.", None, "no_code"),
    ("(v3) Compute it.\n```python\nprint(6*)\n```\n```output", "Still \\boxed{42}.", "failed_call"),
    ("(v4) Compute it.\n" + CODE, "So \\boxed{41}.", "incorrect"),
    ("(v5) Compute it.\n```python\nprint(6*7)  # " + "long " * 16 + "\n```\n```output", "So \\boxed{42}.",
     "too_long"),
    ("(v6) Compute it.\n" + CODE, "So \\boxed{42}.\n```python\nprint(42)\n```\nDone.", "unrun_code"),
    ("(v7) Compute it.\n" + CODE, "So \\boxed{42} and " + "more " * 60, "truncated"),
    ("(v8) Let me run it.\n" + CODE, "The product is \\boxed{42}.", None),
]
MAX_TOKENS = 200       # the task's response budget (ToyTokenizer: one character, one token)
MAX_LENGTH = 120       # the length filter


def make_script(tokenizer: ToyTokenizer):
    """Question "a": VARIANTS in request order; question "b" (2+3): code, then a wrong answer."""
    served: dict[str, int] = {}

    def script(prompt_ids, turn):
        prompt = tokenizer.decode(prompt_ids)
        if "2+3" in prompt:
            return ["```python\nprint(2+3)\n```\n```output", "So \\boxed{6}."][turn]
        if "OURFAIL" in prompt:
            return ["```python\nprint('OURFAIL')\n```\n```output", "\\boxed{1}"][turn]
        if turn == 0:
            i = served["a"] = served.get("a", -1) + 1
            return VARIANTS[i][0]
        i = int(re.findall(r"\(v(\d)\)", prompt)[-1])
        return VARIANTS[i][1]

    return script


def records_file(tmp_path, rows):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"id": i, "problem": p, "answer": a, "source": "test"}) + "\n"
                            for i, p, a in rows))
    return path


def scripted_factory(tokenizer):
    async def factory(cfg):
        return ScriptedEngine(tokenizer, make_script(tokenizer))

    return factory


def test_rejection_sampling_keeps_only_what_its_filters_allow_and_records_the_spec(tmp_path):
    tokenizer = ToyTokenizer()
    questions = load_questions([str(records_file(tmp_path, [("a", "What is 6*7?", "42"),
                                                            ("b", "What is 2+3?", "5")]))], None)
    cfg = SampleConfig(out_dir=str(tmp_path / "out"), model="scripted", k=len(VARIANTS), overrides={"max_response_tokens": MAX_TOKENS},
                       filters=SampleFilters(max_length=MAX_LENGTH), concurrency=16)
    result = sample_questions(questions, cfg, engine_factory=scripted_factory(tokenizer))
    path = write_outputs(result, cfg)

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    kept = sorted(re.match(r"\(v(\d)\)", r["response"]).group(1) for r in rows)
    assert kept == ["0", "8"]
    report = result.report
    expected = {reason: 1 for _, _, reason in VARIANTS if reason}
    expected["incorrect"] += len(VARIANTS)  # every sample of "b" is wrong
    assert report.removed == expected
    assert report.n_in == 2 * len(VARIANTS) and report.n_out == 2
    per_question = {e["question_id"]: e for e in report.details["per_question"]}
    assert per_question["a"]["kept"] == 2 and per_question["a"]["sampled"] == len(VARIANTS)
    assert per_question["a"]["correct"] == len(VARIANTS) - 1  # all but v4
    assert per_question["b"] == {"question_id": "b", "sampled": len(VARIANTS), "correct": 0, "kept": 0,
                                 "dropped": {"incorrect": len(VARIANTS)}}
    assert report.details[f"pass@{len(VARIANTS)}"] == pytest.approx(0.5)
    # Each check on its own: v3 (its traceback) and v7 (truncated) are longer than the bound too.
    assert report.details["failing_each_check"]["too_long"] == 3
    assert report.details["failing_each_check"]["no_code"] == 1

    # The id form: exactly the sampled tokens, the interpreter's masked; the text form beside it.
    for row in rows:
        assert row["problem"] == "What is 6*7?" and row["answer"] == "42"
        assert row["response"] == row["text"] == tokenizer.decode(row["completion_ids"], skip_special_tokens=True)
        assert "```output\n42\n```\n" in row["response"]
        call = row["calls"][0]
        assert call["result"]["status"] == "ok" and call["observation"] == "42"
        mask = row["loss_mask"]
        assert len(mask) == len(row["completion_ids"])
        assert [i for i, m in enumerate(mask) if m == 0] == list(range(call["token_start"], call["token_end"]))
        assert tokenizer.decode(row["completion_ids"][call["token_start"]:call["token_end"]]) == "\n42\n```\n"
        assert tokenizer.decode(row["prompt_ids"]) == TaskSpec().prompt_template().render("What is 6*7?", tokenizer)
        assert row["metadata"]["question_id"] == "a"

    out = tmp_path / "out"
    spec = TaskSpec.load(out)
    assert spec == cfg.task and spec.max_response_tokens == MAX_TOKENS
    stats = json.loads((out / "stats.json").read_text())
    assert stats["removed"] == expected and stats["details"]["settings"]["filters"]["max_length"] == MAX_LENGTH
    assert stats["details"]["settings"]["task_overrides"] == {"max_response_tokens": {"from": TaskSpec().max_response_tokens, "to": MAX_TOKENS}}
    md = (out / "report.md").read_text()
    assert "2 trajectories kept of 18 sampled" in md and "| b | 9 | 0 | 0 | incorrect 9 |" in md
    assert sorted(p.name for p in out.iterdir()) == sorted([DATA_FILE, "task_spec.json", "stats.json", "report.md"])


def test_a_runs_task_spec_is_used_and_recorded_with_overrides(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    TaskSpec(template="torl_fewshot", call_trigger="block_close", max_tool_calls=2, max_response_tokens=300).save(run)
    tokenizer = ToyTokenizer()
    questions = load_questions([str(records_file(tmp_path, [("a", "What is 6*7?", "42")]))], None)
    cfg = SampleConfig(out_dir=str(tmp_path / "out"), run=str(run), model="scripted", k=1, overrides={"max_tool_calls": 1})
    result = sample_questions(questions, cfg, engine_factory=scripted_factory(tokenizer))
    write_outputs(result, cfg)
    spec = TaskSpec.load(tmp_path / "out")
    assert spec == TaskSpec(template="torl_fewshot", call_trigger="block_close", max_tool_calls=1,
                            max_response_tokens=300)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["details"]["settings"]["task_overrides"] == {"max_tool_calls": {"from": 2, "to": 1}}
    [row] = result.rows
    # block_close: the loop ran the block at its closing fence and wrote the whole output block itself.
    assert "print(6*7)\n```\n```output\n42\n```\nSo \\boxed{42}." in row["response"]
    assert tokenizer.decode(row["prompt_ids"]) == spec.prompt_template().render("What is 6*7?", tokenizer)


def test_turning_filters_off_keeps_what_they_dropped(tmp_path):
    tokenizer = ToyTokenizer()
    questions = load_questions([str(records_file(tmp_path, [("a", "What is 6*7?", "42")]))], None)
    cfg = SampleConfig(out_dir=str(tmp_path / "out"), model="scripted", k=len(VARIANTS), overrides={"max_response_tokens": MAX_TOKENS},
                       filters=SampleFilters(require_code=False, require_clean_calls=False), concurrency=16)
    result = sample_questions(questions, cfg, engine_factory=scripted_factory(tokenizer))
    kept = sorted(re.match(r"\(v(\d)\)", r["response"]).group(1) for r in result.rows)
    assert kept == ["0", "2", "3", "5", "6", "8"]
    assert result.report.removed == {"duplicate": 1, "incorrect": 1, "truncated": 1}
    assert list(result.report.details["failing_each_check"]) == ["sandbox_error", "incorrect", "truncated"]


class FailsOnOurSide(SandboxWrapper):
    """The real local sandbox, except that code mentioning OURFAIL meets a (simulated) crash of ours."""

    async def run(self, code, **kw):
        if "OURFAIL" in code:
            return ExecResult(ExecStatus.SANDBOX_ERROR, sandbox_message="worker died")
        return await self.inner.run(code, **kw)


def test_sandbox_errors_are_infrastructure_not_wrong_answers(tmp_path):
    from torl.eval.runner import build_sandbox

    async def sandbox_factory(cfg):
        return FailsOnOurSide(await build_sandbox(cfg))

    scored = []

    def scorer(text, gold, calls):
        from torl.reward import score

        scored.append(text)
        return score(text, gold, calls=calls)

    tokenizer = ToyTokenizer()
    questions = load_questions([str(records_file(tmp_path, [("a", "What is 6*7?", "42"),
                                                            ("c", "OURFAIL: what is 1?", "1")]))], None)
    kw = {"model": "scripted", "k": 3, "overrides": {"max_response_tokens": MAX_TOKENS}, "concurrency": 8}
    cfg = SampleConfig(out_dir=str(tmp_path / "out"), max_sandbox_error_share=0.5, **kw)
    result = sample_questions(questions, cfg, engine_factory=scripted_factory(tokenizer),
                              sandbox_factory=sandbox_factory, scorer=scorer)
    assert result.report.removed["sandbox_error"] == 3 and "incorrect" not in result.report.removed
    assert len(scored) == 3  # only question a's samples were scored
    per_question = {e["question_id"]: e for e in result.report.details["per_question"]}
    assert per_question["c"] == {"question_id": "c", "sampled": 3, "correct": 0, "kept": 0,
                                 "dropped": {"sandbox_error": 3}}
    assert result.report.details["failing_each_check"]["incorrect"] == 0
    assert result.report.details["pass@3"] == 1.0  # over the questions that could be scored: only a
    assert result.report.details["pass_at_k_questions"] == 1

    # Past the allowed share the run stops, writing nothing.
    cfg = SampleConfig(out_dir=str(tmp_path / "out2"), max_sandbox_error_share=0.1, **kw)
    with pytest.raises(UserError, match=r"sandbox failed on our side in 3 of 6 samples"):
        sample_questions(questions, cfg, engine_factory=scripted_factory(ToyTokenizer()),
                         sandbox_factory=sandbox_factory, scorer=scorer)
    assert not (tmp_path / "out2").exists()


def test_out_dir_with_other_files_is_refused_and_an_earlier_output_replaced(tmp_path, capsys):
    records = records_file(tmp_path, [("a", "What is 6*7?", "42")])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["data", "sample", "--input", str(records), "--out", str(busy), "--model", "smollm2-135m"]) == 2
    assert "already holds other files (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]

    tokenizer = ToyTokenizer()
    questions = load_questions([str(records)], None)
    for k in (len(VARIANTS), 1):
        cfg = SampleConfig(out_dir=str(tmp_path / "out"), model="scripted", k=k, overrides={"max_response_tokens": MAX_TOKENS})
        write_outputs(sample_questions(questions, cfg, engine_factory=scripted_factory(tokenizer)), cfg)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["n_in"] == 1  # the second run replaced the first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_questions_come_from_records_or_a_benchmark(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "tiny.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    assert load_questions(None, "tiny", data_dir=str(bench)) == [{"question_id": "0", "problem": "1+1?", "gold": "2"}]
    records = records_file(tmp_path, [("x", "2+2?", "4"), ("y", "3+3?", "6")])
    assert [q["question_id"] for q in load_questions([str(records)], None, limit=1)] == ["x"]
    with pytest.raises(UserError, match="one of the two"):
        load_questions([str(records)], "tiny")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "z", "problem": "no answer", "source": "t"}) + "\n")
    with pytest.raises(UserError, match=r"lacks \['answer'\]"):
        load_questions([str(bad)], None)


# ---------------------------------------------------------------- a teacher endpoint that is down or answers garbage


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


GARBAGE = {
    "not_json": (b"<html>502 proxy</html>", "answer is not JSON"),
    "no_choices": (json.dumps({"object": "text_completion", "data": []}).encode(), "answer has no choices"),
    "choices_not_a_list": (json.dumps({"choices": "nonsense"}).encode(), "AttributeError"),
    "ids_outside_vocab": (json.dumps({"choices": [{
        "text": "x", "finish_reason": "length", "stop_reason": None,
        "logprobs": {"tokens": ["token_id:99999999"], "token_logprobs": [-0.1]}}]}).encode(),
        "outside the tokenizer's 49152"),
}


@pytest.fixture
def garbage_server():
    """An OpenAI-compatible server on 127.0.0.1 that lists its model properly, then answers `GARBAGE[kind]`."""
    state = {"kind": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "teacher", "object": "model"}]}).encode()
            self._send(200 if self.path == "/v1/models" else 404, body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(200, GARBAGE[state["kind"]][0])

        def _send(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class QuietServer(HTTPServer):
        def handle_error(self, request, client_address):
            pass  # the client hangs up on in-flight requests once one answer is garbage: not the CLI's output

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def teacher_argv(records, out, base_url):
    return ["data", "sample", "--input", str(records), "--out", str(out), "--engine", "openai", "--model", "teacher",
            "--tokenizer", "smollm2-135m", "--base-url", base_url, "--k", "2", "--max-response-tokens", "32", "--quiet"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_teacher_endpoint_down_is_one_line_and_writes_nothing(tmp_path, capsys):
    records = records_file(tmp_path, [("a", "What is 6*7?", "42")])
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert main(teacher_argv(records, tmp_path / "out", url)) == 2
    assert f"cannot reach the OpenAI-compatible server at {url}" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_teacher_answering_garbage_is_one_line_and_writes_nothing(tmp_path, capsys, garbage_server, kind):
    state, url = garbage_server
    state["kind"] = kind
    records = records_file(tmp_path, [("a", "What is 6*7?", "42"), ("b", "What is 2+3?", "5")])
    assert main(teacher_argv(records, tmp_path / "out", url)) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"torl: error: the engine at {url}") and GARBAGE[kind][1] in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- a real model


@pytest.mark.slow
def test_smollm2_short_run_writes_a_valid_file(tmp_path, capsys):
    from transformers import AutoTokenizer

    from torl.engines.models import resolve_model

    records = records_file(tmp_path, [("one", "What is 1 + 1?", "2"), ("two", "What is 2 + 2?", "4"),
                                      ("three", "What is 3 + 4?", "7")])
    out = tmp_path / "out"
    argv = ["data", "sample", "--input", str(records), "--out", str(out), "--model", "smollm2-135m",
            "--template", "torl_fewshot", "--call-trigger", "block_close", "--k", "2", "--max-tokens", "48",
            "--allow-no-code", "--seed", "1", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_in"] == 6 and stats["n_in"] == stats["n_out"] + sum(stats["removed"].values())
    assert f"sample: {stats['n_out']} kept of 6 sampled" in printed
    spec = TaskSpec.load(out)
    assert (spec.template, spec.call_trigger, spec.max_response_tokens) == ("torl_fewshot", "block_close", 48)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    rows = [json.loads(line) for line in (out / DATA_FILE).read_text().splitlines()]
    assert len(rows) == stats["n_out"] >= 1
    for row in rows:
        assert len(row["loss_mask"]) == len(row["completion_ids"]) <= 48
        assert row["prompt_ids"] == spec.prompt_template().encode(row["problem"], tokenizer)
        assert row["response"] == row["text"] == tokenizer.decode(row["completion_ids"], skip_special_tokens=True)
        assert row["answer"] in {"2", "4", "7"} and not row["truncated"] and not row["sandbox_error"]
