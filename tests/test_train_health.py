"""Run health wired into `torl train`: alarms in metrics.jsonl and TensorBoard, the warning line, README,
stop-on-alarm, the monitor across a resume, samples kept on a gradient spike, the SimpleTIR filter.

A tiny random Llama is trained on scripted rollouts (`tests/test_train_signal.py` builds them the same
way): a script that never boxes an answer makes `format_collapse` fire at step 1.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
from pathlib import Path

import pytest
from conftest import tiny_recipe, write_questions

from torl.engines.scripted import ScriptedEngine
from torl.errors import UserError
from torl.metrics.alarms import ALARM_NAMES
from torl.metrics.health import is_degenerate
from torl.train.config import parse_train_args, validate
from torl.train.trainer import run_training
from torl.train.watch import STATE_FILE

QUESTION = re.compile(r"Compute \$(\d+) \\times (\d+)\$")
VOID = "I am not sure what that means."


def _engine(answer):
    """Python computes the product; then `answer(a, b, k)` writes the turn after the output, where k
    counts that question's responses (0, 1, 2, ...)."""

    def factory(kind, model, tokenizer, model_path, grpo_cfg):
        counters = collections.defaultdict(itertools.count)

        def script(prompt_ids, turn):
            a, b = map(int, QUESTION.findall(tokenizer.decode(prompt_ids))[-1])
            if turn == 0:
                return f"```python\nprint({a} * {b})\n```\n```output"
            return answer(a, b, next(counters[(a, b)]))

        return ScriptedEngine(tokenizer, script), False

    return factory


never_boxed = _engine(lambda a, b, k: VOID)                                          # every response degenerate
right_and_wrong = _engine(lambda a, b, k: f"So \\boxed{{{a * b + k % 2}}}.")          # signal in every group
half_void = _engine(lambda a, b, k: VOID if k % 2 else f"So \\boxed{{{a * b}}}.")    # 2 of 4 void per group


def _recipe(tmp_path: Path, model_dir: Path, *extra: str, questions=((2, 3), (4, 5))):
    data = write_questions(tmp_path, questions)
    recipe = tiny_recipe(tmp_path, model_dir, train_files=[data], save_only_model=True)
    return parse_train_args(["--config", str(recipe), *extra])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _warnings(stderr: str) -> list[str]:
    shown = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]  # what a terminal shows (tqdm's \r redraws)
    return [line for line in shown if line.startswith("torl: warning: health alarm")]


def _tensorboard_scalars(logdir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for events in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return scalars


def test_health_thresholds_are_checked_under_their_config_names(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match=r"health_grad_warmup \(60\) must be <= health_grad_window \(50\)"):
        validate(*_recipe(tmp_path, tiny_model_dir, "--health_grad_warmup", "60"))
    with pytest.raises(UserError, match=r"^health_no_boxed_max must be in \[0, 1\)"):
        validate(*_recipe(tmp_path, tiny_model_dir, "--health_no_boxed_max", "1.5"))


@pytest.mark.slow
def test_an_alarm_reaches_metrics_tensorboard_the_console_and_the_readme(tmp_path, tiny_model_dir, capsys):
    assert run_training(*_recipe(tmp_path, tiny_model_dir), engine_factory=never_boxed) == 0
    run = tmp_path / "run"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["health/no_boxed_ratio"] == 1.0
        assert {f"health/alarm_{name}" for name in ALARM_NAMES} <= set(r)
        assert r["health/alarm_format_collapse"] == 1
        assert all(r[f"health/alarm_{n}"] == 0 for n in ALARM_NAMES if n != "format_collapse")
    # One warning line, when the alarm first fires; it names the alarm, the step and what was seen.
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith("torl: warning: health alarm format_collapse at step 1: 100% of responses have no")
    tags = _tensorboard_scalars(run / "tensorboard")
    (tag,) = [t for t in tags if t.endswith("health/alarm_format_collapse")]
    assert tags[tag] == [1.0, 1.0]
    readme = (run / "README.txt").read_text()
    assert "health: 1 alarm(s) in 2 step(s)" in readme
    assert "- format_collapse: held at 2 step(s), first at step 1 (last 2, still active)" in readme
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_stop_on_alarm_saves_a_checkpoint_and_names_the_alarm(tmp_path, tiny_model_dir, capsys):
    cfg = _recipe(tmp_path, tiny_model_dir, "--health_stop_on_alarm", "true", "--max_steps", "4",
                  "--save_steps", "100")
    assert run_training(*cfg, engine_factory=never_boxed) == 0
    run = tmp_path / "run"
    assert [r["step"] for r in _metrics(run)] == [1]
    checkpoint = run / "checkpoints" / "checkpoint-1"
    assert (checkpoint / "trainer_state.json").exists() and (checkpoint / STATE_FILE).exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped by health alarm format_collapse"
    assert "stopping at step 1 on health alarm format_collapse" in capsys.readouterr().err


@pytest.mark.slow
def test_the_monitor_state_survives_a_resume(tmp_path, tiny_model_dir, capsys):
    full_checkpoints = ("--save_only_model", "false")  # optimizer and RNG too: what resuming needs
    assert run_training(*_recipe(tmp_path, tiny_model_dir, *full_checkpoints), engine_factory=never_boxed) == 0
    run = tmp_path / "run"
    state = json.loads((run / "checkpoints" / "checkpoint-2" / STATE_FILE).read_text())
    assert state["steps"] == 2 and state["active"] == ["format_collapse"]
    assert len(_warnings(capsys.readouterr().err)) == 1

    resumed = _recipe(tmp_path, tiny_model_dir, "--max_steps", "3", "--resume", *full_checkpoints)
    assert run_training(*resumed, engine_factory=never_boxed) == 0
    assert _warnings(capsys.readouterr().err) == []  # the alarm still holds: not new after the resume
    assert [r["step"] for r in _metrics(run)] == [1, 2, 3]
    assert _metrics(run)[-1]["health/alarm_format_collapse"] == 1
    assert json.loads((run / "checkpoints" / "checkpoint-3" / STATE_FILE).read_text())["steps"] == 3
    # The README counts the whole run, not only the resumed part.
    assert "- format_collapse: held at 3 step(s), first at step 1" in (run / "README.txt").read_text()


@pytest.mark.slow
def test_a_grad_norm_spike_keeps_its_samples_when_dumps_are_off(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from transformers import Trainer

    logged = {0: 1.0, 1: 1.1, 2: 50.0}  # the norm logged for the step that starts at global_step k
    original = Trainer._get_grad_norm

    def spiking(self, model, grad_norm=None):
        original(self, model, grad_norm=grad_norm)
        return logged[self.state.global_step]

    monkeypatch.setattr(Trainer, "_get_grad_norm", spiking)
    cfg = _recipe(tmp_path, tiny_model_dir, "--dump_samples", "false", "--max_steps", "3",
                  "--health_grad_warmup", "1", "--health_grad_window", "2", "--health_grad_spike_factor", "5")
    assert run_training(*cfg, engine_factory=right_and_wrong) == 0
    run = tmp_path / "run"
    rows = _metrics(run)
    assert [r["grad_norm"] for r in rows] == [1.0, 1.1, 50.0]
    assert [r["health/alarm_grad_norm_spike"] for r in rows] == [0, 0, 1]
    assert not list((run / "samples").glob("step_*.jsonl"))  # no regular dumps
    kept = run / "samples" / "alarms" / "step_000003.jsonl"
    dump = [json.loads(line) for line in kept.read_text().splitlines()]
    assert len(dump) == 4 and {row["step"] for row in dump} == {3}
    assert all(row["trajectory"]["calls"] for row in dump)
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith("torl: warning: health alarm grad_norm_spike at step 3: grad_norm 50 is")
    assert line.endswith(f"(samples: {kept})")


@pytest.mark.slow
def test_the_simpletir_filter_masks_only_degenerate_responses(tmp_path, tiny_model_dir, monkeypatch):
    from trl import GRPOTrainer

    seen = []
    original = GRPOTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append({k: inputs[k].clone() for k in ("completion_ids", "completion_mask", "tool_mask", "advantages")})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "compute_loss", spy)
    # Two groups of 4, each with 2 void responses (reward -1, no boxed answer) and 2 right ones (+1);
    # the health checks are off, which must not turn the filter off.
    cfg = _recipe(tmp_path, tiny_model_dir, "--filter_void_turns", "true", "--max_steps", "1",
                  "--per_device_train_batch_size", "8", "--health_checks", "false")
    assert run_training(*cfg, engine_factory=half_void) == 0
    run = tmp_path / "run"
    (row,) = _metrics(run)
    assert row["health/filtered_responses"] == 4
    assert not [k for k in row if k.startswith("health/") and k != "health/filtered_responses"]  # checks off
    assert "health: checks off" in (run / "README.txt").read_text()
    dump = [json.loads(line) for line in (run / "samples" / "step_000001.jsonl").read_text().splitlines()]
    assert [r["loss_masked"] for r in dump] == [is_degenerate(r["trajectory"]) for r in dump]
    assert sum(r["loss_masked"] for r in dump) == 4

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    (batch,) = seen
    masked = []
    for ids, completion, tool, advantage in zip(batch["completion_ids"], batch["completion_mask"],
                                                batch["tool_mask"], batch["advantages"], strict=True):
        void = VOID in tokenizer.decode(ids[completion.bool()])
        trained = int((completion * tool).sum())
        assert (trained == 0) == void  # degenerate responses only, and all of their tokens
        masked.append((void, float(advantage)))
    # Advantages come from the full group: the void responses' -1 stays in the baseline, so the kept
    # responses have the advantage they would have had without the filter (+a against -a).
    assert {round(a, 4) for void, a in masked if void} == {-round(a, 4) for void, a in masked if not void}
    assert all(a > 0 for void, a in masked if not void)
