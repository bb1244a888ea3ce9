"""`torl report` on hand-written training-run and eval dirs: files, plots, analytics, escaping."""

import json

import pytest
from test_metrics_behaviour import (
    CONFIRMED,
    CONTRADICTED,
    NOT_RECOVERED,
    PLAIN,
    RECOVERED,
    SANDBOX_FAIL,
    make_traj,
)

from torl.analysis.report import build_report, pick_samples
from torl.analysis.viewer import embed_json
from torl.cli import UserError

XSS_PROBLEM = 'What is 1+1? </script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
XSS_TRAJ = make_traj("Let me run <b>bold</b> </script><script>window.__pwned=3</script>\n",
                     ("print('<img src=y onerror=window.__pwned=4>')", "error", "<svg onload=window.__pwned=5>"),
                     "So \\boxed{2} \u2028 done")

# (trajectory, correct) per sampled response of each step: 3 steps, 4 responses each
STEPS = {
    1: [(PLAIN, True), (make_traj("no idea \\boxed{3}"), False), (XSS_TRAJ, True), (SANDBOX_FAIL, None)],
    2: [(CONFIRMED, True), (NOT_RECOVERED, False), (PLAIN, False), (RECOVERED, True)],
    3: [(CONFIRMED, True), (CONTRADICTED, True), (RECOVERED, True), (PLAIN, True)],
}


def expected_counts():
    rows = [(t, c) for step in STEPS.values() for t, c in step]
    return {
        "all": len(rows),
        "correct": sum(c is True for _, c in rows),
        "incorrect": sum(c is False for _, c in rows),
        "with_code": sum(bool(t["calls"] or t["skipped_calls"]) for t, _ in rows),
        "failed": sum(any(x["result"]["status"] in ("error", "timeout") for x in t["calls"]) for t, _ in rows),
        "sandbox": sum(t["sandbox_error"] for t, _ in rows),
    }


def make_train_run(root):
    (root / "samples").mkdir(parents=True)
    metrics = []
    for step, responses in STEPS.items():
        with (root / "samples" / f"step_{step:06d}.jsonl").open("w") as f:
            for i, (traj, correct) in enumerate(responses):
                f.write(json.dumps({
                    "step": step, "question_id": f"q{i}", "problem": XSS_PROBLEM if traj is XSS_TRAJ else f"Problem {i}",
                    "gold": "2", "prompt": "User: ...", "reward": None if correct is None else (1.0 if correct else -1.0),
                    "correct": correct, "extracted": "2", "reason": "x", "trajectory": traj,
                }) + "\n")
        metrics.append({"step": step, "loss": 0.1, "rewards/accuracy": 0.25 * step, "tools/code_ratio": 0.3 * step,
                        "tools/pass_ratio": 0.5, "lengths/model_tokens": 100.0 + step, "tools/calls_per_response": 1.0})
    (root / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return root


def make_eval_dir(root):
    from torl.eval.runner import EvalConfig
    from torl.eval.summary import summarize, write_outputs

    rows = []
    for bench, trajs in {"math500": [(PLAIN, True), (CONFIRMED, True), (NOT_RECOVERED, False)],
                         "aime24": [(CONTRADICTED, False), (XSS_TRAJ, True)]}.items():
        for i, (traj, correct) in enumerate(trajs):
            rows.append({"benchmark": bench, "question_id": str(i), "sample": 0, "problem": f"P{i}", "gold": "1",
                         "correct": correct, "reward": 1.0 if correct else -1.0, "extracted": "1", "reason": "x",
                         "trajectory": traj})
    root.mkdir(parents=True)
    (root / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(model="m", benchmarks=["math500", "aime24"], out_dir=str(root))
    write_outputs(summarize(rows, cfg), rows, root)
    return root


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_training_report_files_and_analytics(tmp_path):
    run = make_train_run(tmp_path / "run")
    files = build_report(run)
    out = run / "report"
    assert files[0] == out / "index.html"
    names = {p.name for p in files}
    assert {"curves.png", "curve_training_accuracy.png", "curve_code_ratio.png", "curve_code_pass_ratio.png",
            "curve_response_length.png", "curve_calls_per_response.png", "analytics_over_steps.png",
            "analytics_by_step.json"} <= names
    assert all(is_png(p) for p in files if p.suffix == ".png")
    by_step = json.loads((out / "analytics_by_step.json").read_text())
    assert list(by_step) == ["1", "2", "3"]
    assert by_step["3"]["accuracy"] == 1.0 and by_step["2"]["error_responses"] == 2
    assert by_step["1"]["sandbox_error_responses"] == 1 and by_step["1"]["scored"] == 3


def test_curves_fall_back_to_sample_analytics(tmp_path):
    run = make_train_run(tmp_path / "run")
    (run / "metrics.jsonl").write_text("")
    names = {p.name for p in build_report(run, tmp_path / "out")}
    assert "curve_code_ratio.png" in names and "curve_training_accuracy.png" in names


def test_eval_report(tmp_path):
    files = build_report(make_eval_dir(tmp_path / "ev"), tmp_path / "rep")
    assert {p.name for p in files} == {"index.html", "analytics.json", "eval_benchmarks.png"}
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "MATH500" in page and "AIME24" in page and "greedy accuracy" in page


def test_page_is_self_contained_and_escapes_model_text(tmp_path):
    run = make_train_run(tmp_path / "run")
    build_report(run)
    page = (run / "report" / "index.html").read_text()
    assert "window.__pwned" in page  # the data is there...
    for raw in ("<script>window.__pwned", "<img src=x", "<svg onload", "<b>bold</b>", "<img src=y"):
        assert raw not in page  # ...but never as markup
    assert page.count("<script") == 2 and page.count("</script>") == 2
    for external in ("http://", "https://", "src=\"//", "@import"):
        assert external not in page
    assert "default-src 'none'" in page


def test_embed_json_round_trips_dangerous_text():
    text = "</script><!-- & \u2028 \u2029 >"
    blob = embed_json({"t": text})
    assert "<" not in blob and ">" not in blob and "&" not in blob and "\u2028" not in blob
    assert json.loads(blob) == {"t": text}


def test_pick_samples_spreads_over_groups():
    rows = [{"step": s, "i": i} for s in (1, 2, 3) for i in range(10)]
    picked = pick_samples(rows, "step", 6)
    assert len(picked) == 6 and [r["step"] for r in picked] == [1, 1, 2, 2, 3, 3]
    assert pick_samples(rows, "step", 0) == rows


def test_report_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither metrics.jsonl"):
        build_report(tmp_path / "empty")
    bad = make_train_run(tmp_path / "bad")
    (bad / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match="metrics.jsonl:2 is not valid JSON"):
        build_report(bad)


def test_report_cli(tmp_path, capsys):
    import argparse

    from torl.analysis.commands import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    run = make_train_run(tmp_path / "run")
    args = parser.parse_args(["report", str(run), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert "index.html" in capsys.readouterr().out and (tmp_path / "o" / "index.html").exists()
