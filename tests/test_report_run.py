"""`torl report` on a training run laid out as `torl train` writes it: held-out before/after (written by
`torl.train.heldout` itself), block_close trajectories from the real TIR loop, the optimizer's and
health columns of metrics.jsonl; and one clear line for directories that are not reportable."""

import json
import re

import pytest
from matplotlib.image import imread
from test_tir_loop import FakeSandbox

from torl.analysis.report import build_report
from torl.analysis.rundata import load_run
from torl.analysis.viewer import (
    heldout_record,
    observation_text,
    sample_record,
    split_observations,
)
from torl.background_loop import BackgroundLoop
from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.errors import UserError
from torl.run_layout import RunLayout
from torl.tir.loop import RolloutConfig, rollout_many
from torl.tir.task import TaskSpec
from torl.tir.templates import get_template
from torl.tir.trajectory import compact_trajectory
from torl.train.heldout import evaluate_heldout

QUESTIONS = [{"question_id": f"q{i}", "problem": f"Compute ${a} \\times {b}$.", "gold": str(a * b)}
             for i, (a, b) in enumerate([(848, 62), (327, 40), (295, 21), (308, 65)])]
STOP = ("\nUser:",)


def in_head(prompt, turn):  # the untrained model: a wrong product, no code
    return "848 \\times 62 = 516. The answer is \\boxed{516}.\n\nUser:"


def with_code(q):  # the trained model: hands the product to the interpreter (block_close)
    return lambda prompt, turn: [f"```python\nprint({product_of(q)})\n```\n",
                                 f"The answer is \\boxed{{{q['gold']}}}.\n\nUser:"][min(turn, 1)]


def product_of(q):
    return q["problem"][len("Compute $"):-len("$.")].replace(" \\times ", "*")


def engine_for(script):
    """A scripted engine whose turns depend on the question in the prompt: script(question) -> (prompt, turn) -> turn."""
    tok = ToyTokenizer()

    def turns(prompt, turn):
        text = tok.decode(prompt)
        question = next(q for q in QUESTIONS if q["problem"] in text)
        return script(question)(prompt, turn)
    return ScriptedEngine(tok, turns)


def step_script(step):
    """Step 1 answers in its head; later steps use code; at step 2 the first question's call fails (NameError)."""
    def script(q):
        if step == 1:
            return in_head
        if step == 2 and q is QUESTIONS[0]:
            return lambda prompt, turn: ["```python\nprint(x)\n```\n", "Oops, no x.\n```python\nprint(848*62)\n```\n"][min(turn, 1)]
        return with_code(q)
    return script


def make_grpo_run(root, *, steps=4, heldout=True):
    """A run dir as `torl train` with eval_before_after and call_trigger block_close leaves it."""
    run = RunLayout(root)
    for path in (run.root, run.samples, run.checkpoints):
        path.mkdir(parents=True, exist_ok=True)
    TaskSpec(template="torl_fewshot", max_tool_calls=1, extra_stop=STOP, call_trigger="block_close").save(root)
    config = RolloutConfig(max_tool_calls=1, max_response_tokens=400, call_trigger="block_close", stop_strings=STOP)
    template = get_template("torl_fewshot")
    loop = BackgroundLoop("test-report")

    def evaluate(when, script):
        summary = evaluate_heldout(engine_for(script), FakeSandbox(), loop, template, QUESTIONS, config, "torl",
                                   run.heldout_rows(when))
        run.heldout_summary(when).write_text(json.dumps(summary, indent=2) + "\n")

    try:
        if heldout:
            evaluate("before", lambda q: in_head)
        metrics = []
        for step in range(1, steps + 1):
            engine = engine_for(step_script(step))
            prompts = [template.encode(q["problem"], engine.tokenizer) for q in QUESTIONS]
            trajs = loop.run(rollout_many(engine, FakeSandbox(), prompts, config))
            with run.sample_file(step).open("w") as f:
                for q, traj in zip(QUESTIONS, trajs):
                    correct = f"\\boxed{{{q['gold']}}}" in traj.text
                    f.write(json.dumps({"step": step, "question_id": q["question_id"], "problem": q["problem"], "gold": q["gold"],
                                        "reward": 1.0 if correct else -1.0, "correct": correct, "extracted": None,
                                        "trajectory": compact_trajectory(traj.to_dict())}) + "\n")
            metrics.append({"step": step, "loss": 0.02 * (5 - step), "grad_norm": 1.0 + step, "entropy": 0.9 - 0.1 * step,
                            "reward": -1.0 + 0.5 * step, "reward_std": 0.4, "rewards/accuracy": 0.25 * step,
                            "tools/code_ratio": 0.0 if step == 1 else 1.0, "health/void_turn_ratio": 0.0,
                            "health/no_boxed_ratio": 0.0, "health/alarm_tool_collapse": 0,
                            "health/alarm_entropy_collapse": int(step == 3)})
        run.metrics.write_text("".join(json.dumps(m) + "\n" for m in metrics))
        if heldout:
            evaluate("after", lambda q: with_code(q))
    finally:
        loop.close()
    return root


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    root = make_grpo_run(tmp_path_factory.mktemp("grpo") / "run")
    build_report(root)
    return root


def page_data(page: str) -> list[dict]:
    blob = re.search(r'<script type="application/json" id="torl-data">(.*?)</script>', page, re.DOTALL).group(1)
    return json.loads(blob)


def test_the_fixture_is_what_training_writes(grpo_run):
    run = load_run(grpo_run)
    assert run.heldout["before"].summary == {"questions": 4, "accuracy": 0.0, "code_ratio": 0.0, "sandbox_errors": 0}
    assert run.heldout["after"].summary == {"questions": 4, "accuracy": 1.0, "code_ratio": 1.0, "sandbox_errors": 0}
    assert run.max_tool_calls == 1
    step3 = next(r for r in run.samples if r["step"] == 3)["trajectory"]
    assert [s["kind"] for s in step3["segments"]] == ["model", "tool", "model"]
    assert step3["segments"][1]["text"] == "```output\n52576\n```\n"  # block_close: the loop wrote the whole block


def test_heldout_before_after_in_page_table_and_plot(grpo_run):
    page = (grpo_run / "report" / "index.html").read_text()
    assert "held-out greedy accuracy 0.000 → 1.000 · code ratio 0.000 → 1.000" in page
    assert "Held-out greedy evaluation (4 questions never trained on)" in page
    assert re.search(r"<td>before training</td><td>0.000</td><td>0.000</td><td>0</td>", page)
    assert re.search(r"<td>after training</td><td>1.000</td><td>1.000</td><td>0</td>", page)
    image = imread(grpo_run / "report" / "heldout_before_after.png")
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert 'alt="heldout_before_after"' in page  # inline in the page, first figure
    assert page.index('alt="heldout_before_after"') < page.index('alt="curves"')


def test_heldout_rollouts_are_in_the_browser(grpo_run):
    records = page_data((grpo_run / "report" / "index.html").read_text())
    groups = [r["group"] for r in records]
    assert groups == ["held-out before"] * 4 + [s for s in (1, 2, 3, 4) for _ in QUESTIONS] + ["held-out after"] * 4
    assert [r["i"] for r in records] == list(range(len(records)))
    after = records[-4:]
    assert all(r["correct"] is True and r["code"] and r["calls"] == 1 for r in after)
    assert [s["kind"] for s in after[1]["segments"]] == ["model", "tool", "model"]
    assert after[1]["segments"][1]["text"] == "13080"
    assert after[1]["segments"][0]["text"] == "```python\nprint(327*40)\n```\n"
    before = records[0]
    assert before["correct"] is False and not before["code"] and before["extracted"] == "516"


def test_output_boxes_hold_only_the_observation(grpo_run):
    records = page_data((grpo_run / "report" / "index.html").read_text())
    tools = [s for r in records for s in r["segments"] if s["kind"] == "tool"]
    assert len(tools) == 4 + 3 * 4  # held-out after + steps 2-4, one call each (C = 1)
    for seg in tools:
        assert "```" not in seg["text"] and not seg["text"].startswith("\n")
    failed = [s for s in tools if s.get("status") == "error"]
    assert len(failed) == 1 and "NameError" in failed[0]["text"]


def test_observation_text_under_both_triggers():
    assert observation_text("```output\n17834\n```\n") == "17834"        # block_close
    assert observation_text("\n17834\n```\n") == "17834"                 # output_fence (model wrote ```output)
    assert observation_text("```output\nline1\n\nline3\n```\n") == "line1\n\nline3"
    assert observation_text("```output\n123") == "123"                   # cut by the budget
    from test_metrics_behaviour import CONFIRMED

    segs = sample_record(0, {"trajectory": CONFIRMED}, "step")["segments"]
    assert segs[1]["text"] == "```python\nprint(482*37)\n```\n"   # the model's ```output opens the box
    assert segs[2] == {"kind": "tool", "text": "17834", "status": "ok"}


def test_split_observations_honours_c_and_needs_a_code_block():
    text = ("```python\nprint(1)\n```\n```output\n1\n```\nAgain:\n```python\nprint(2)\n```\n```output\n2\n```\n"
            "\\boxed{1}")
    assert [s["kind"] for s in split_observations(text, 1)] == ["model", "tool", "model"]
    assert [s["kind"] for s in split_observations(text, 2)] == ["model", "tool", "model", "tool", "model"]
    assert "".join(s["text"] for s in split_observations(text, 1)) == text
    fake = "I guess:\n```output\n5\n```\n\\boxed{5}"  # no code block before it: the model's own text
    assert [s["kind"] for s in split_observations(fake, None)] == ["model"]
    rec = heldout_record(3, {"question_id": "q", "text": text, "used_code": True, "correct": True}, "held-out after", 1)
    assert rec["calls"] == 1 and rec["segments"][1]["text"] == "1" and "```output" in rec["segments"][2]["text"]


def test_reward_loss_entropy_and_health_curves(grpo_run):
    out = grpo_run / "report"
    for name in ("curve_reward.png", "curve_loss.png", "curve_entropy.png", "curve_gradient_norm.png",
                 "health_over_steps.png", "analytics_over_steps.png", "curves.png"):
        assert imread(out / name).shape[1] > 400, name
    page = (out / "index.html").read_text()
    assert 'alt="health_over_steps"' in page and 'alt="curves"' in page


def test_one_point_panels_span_the_run_and_the_unit_interval(tmp_path, monkeypatch):
    """Error recovery is measured at step 2 only: its panel spans steps 1-4 and [0, 1], its point solid."""
    from matplotlib import pyplot as plt

    from torl.analysis import plots

    run = load_run(make_grpo_run(tmp_path / "run", heldout=False))
    from torl.metrics.behaviour import metrics_by

    by_step = metrics_by(run.samples, key=lambda r: r["step"])
    assert [s for s, m in by_step.items() if m["error_recovery_ratio"] is not None] == [2]
    captured, real_save = {}, plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault(path.name, fig) and real_save(fig, path))
    plots.analytics_over_steps(by_step, tmp_path, plots.step_range(run.metrics, by_step))
    plots.training_curves([{"step": 1, "loss": 0.3}, {"step": 9, "entropy": 2.0}], {}, tmp_path)
    axes = {ax.get_title(): ax for ax in captured["analytics_over_steps.png"].axes}
    recovery = axes["Error recovery"]
    lo, hi = recovery.get_xlim()
    assert lo < 1 and hi > 4
    assert recovery.get_ylim()[0] <= 0 and recovery.get_ylim()[1] >= 1
    line = next(ln for ln in recovery.get_lines() if ln.get_label() == "error_recovery_ratio")
    assert list(line.get_xdata()) == [2] and line.get_alpha() in (None, 1) and line.get_markersize() >= 6
    entropy = captured["curve_entropy.png"].axes[0]  # one point, not a ratio: zero in view, whole run on x
    low, high = entropy.get_ylim()
    assert low <= 0 and high > 2.0
    assert entropy.get_xlim()[0] < 1 and entropy.get_xlim()[1] > 9
    assert any(t.get_text() == "2" for t in entropy.texts)  # the lone value is written next to it
    plt.close("all")


def test_page_tells_that_rows_expand(grpo_run):
    page = (grpo_run / "report" / "index.html").read_text()
    assert 'id="expand-hint"' in page and "Click a row" in page


# --- directories `torl report` cannot draw: one line, no traceback -----------------------------------

def test_sft_style_run_is_refused_in_one_line(tmp_path, capsys):
    from torl.cli import main

    run = tmp_path / "sft"
    (run / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "learning_rate": 1e-5,
                                                           "epoch": s / 10}) + "\n" for s in (1, 2, 3)))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no rollout metrics" in err and "not a `torl train` GRPO run" in err


def test_eval_only_dirs_are_refused_in_one_line(tmp_path, capsys):
    from torl.cli import main

    heldout_only = make_grpo_run(tmp_path / "run", steps=0)
    (heldout_only / "metrics.jsonl").unlink()
    for path in RunLayout(heldout_only).sample_files():
        path.unlink()
    RunLayout(heldout_only).samples.rmdir()
    assert main(["report", str(heldout_only)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "only the held-out evaluation" in err

    results_only = tmp_path / "ev"
    results_only.mkdir()
    (results_only / "results.json").write_text("{}")
    assert main(["report", str(results_only)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "without trajectories.jsonl" in err

    not_trajectories = tmp_path / "sft-data"
    not_trajectories.mkdir()
    (not_trajectories / "trajectories.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    assert main(["report", str(not_trajectories)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "without a 'trajectory'" in err


def test_a_run_without_heldout_evaluation_has_no_headline(tmp_path):
    root = make_grpo_run(tmp_path / "run", steps=2, heldout=False)
    files = build_report(root)
    page = files[0].read_text()
    assert "heldout_before_after.png" not in {p.name for p in files}
    assert '<div class="headline" id="headline"></div>' in page
    with pytest.raises(UserError, match="not valid JSON"):
        (root / "eval_after.json").write_text("{")
        build_report(root)
