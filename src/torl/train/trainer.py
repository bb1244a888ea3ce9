"""`torl train`: validate, build the pieces, hand them to TRL's GRPOTrainer, write the run directory.

The GRPO algorithm (advantages, clipping, loss variants, KL) is TRL's. torl supplies what makes it
tool-integrated: the rollout function (`rollout.py`), the reward (`rewards.py`), and the run
directory with metrics and sample dumps.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from torl.errors import InfraError
from torl.train.config import check_sandbox, validate
from torl.train.ranks import is_main_process
from torl.train.run_dir import RunDir
from torl.train.session import EngineFactory, TrainingSession
from torl.train.start import resolve_start
from torl.train.step_record import truncate_metrics


def run_training(torl_cfg, grpo_cfg, engine_factory: EngineFactory | None = None) -> int:
    """Train per the config; returns the process exit status (0 = finished or stopped cleanly).

    `engine_factory`: how the rollout engine is built (default: `torl.train.rollout_engine.build_engine`).
    """
    start = resolve_start(torl_cfg)  # --model RUN_DIR: that run's weights and task spec (SFT→RL)
    if start and "max_response_tokens" in start["changed"]:
        grpo_cfg.max_completion_length = torl_cfg.max_response_tokens  # TRL's copy follows the adopted budget
    validate(torl_cfg, grpo_cfg)
    if torl_cfg.max_tool_calls > 0:
        check_sandbox(torl_cfg)  # before any model loads: an unusable sandbox is a setup error
    run = RunDir(torl_cfg.run_dir)
    checkpoint = run.prepare(torl_cfg.resume)
    _point_trl_at_run_dir(grpo_cfg, run)
    if is_main_process():  # one writer for the run directory's shared files
        run.write_config(torl_cfg, grpo_cfg, start)
    if checkpoint:
        step = json.loads((Path(checkpoint) / "trainer_state.json")
                          .read_text())["global_step"]
        if is_main_process():
            truncate_metrics(run.metrics, step)
            print(f"torl: resuming {run.root} from {checkpoint} (step {step})", file=sys.stderr)

    try:
        return _train_in_session(torl_cfg, grpo_cfg, run, checkpoint, engine_factory, start)
    except InfraError as e:  # ours, not the model's (sandbox, verifier, token contract): stop loudly, keep checkpoints
        print(f"torl: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _train_in_session(torl_cfg, grpo_cfg, run: RunDir, checkpoint: str | None, engine_factory,
                      start: dict | None = None) -> int:
    started = time.time()
    main = is_main_process()
    with TrainingSession(torl_cfg, grpo_cfg, run, engine_factory) as session:
        summary = session.summary_base()
        if start:
            summary["started_from"] = start
        if torl_cfg.eval_before_after:
            summary["eval_before"] = session.evaluate("before", reuse=bool(checkpoint))
            if main:
                _print_eval("before", summary["eval_before"])
        status = session.train(checkpoint)
        if torl_cfg.lora_r:  # a collective under ZeRO-3/FSDP: every process; the main one writes
            from torl.train.lora import save_merged_model

            save_merged_model(session.trainer, session.trainer.processing_class, run.root / "merged")
        summary["status"] = status
        if torl_cfg.eval_before_after and status != "interrupted":
            summary["eval_after"] = session.evaluate("after")
            if main:
                _print_eval("after", summary["eval_after"])
        summary.update(steps=session.trainer.state.global_step, wall_s=time.time() - started,
                       curve=_curve(run), health=session.health_summary())
        if session.trainer.state.global_step and run.checkpoint_dirs():
            summary["model_dir"] = str(run.root / "merged" if torl_cfg.lora_r else run.checkpoint_dirs()[-1])
        if main:
            run.write_summary(summary)
    if main:
        print(f"torl: run directory {run.root} ({status}); see {run.readme}", file=sys.stderr)
    return 0


def _point_trl_at_run_dir(grpo_cfg, run: RunDir) -> None:
    grpo_cfg.output_dir = str(run.checkpoints)
    # transformers 5 reads the tensorboard directory from the environment, not from the arguments.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.tensorboard)
    if not grpo_cfg.report_to or grpo_cfg.report_to == ["none"]:
        grpo_cfg.report_to = ["tensorboard"]  # offline by default; wandb etc. only when asked for
    grpo_cfg.logging_steps = 1  # every metric is per step (torl/metrics/METRICS.md); averaging would hide steps


CURVE_KEYS = ("step", "tools/code_ratio", "rewards/accuracy", "reward", "signal/informative_groups", "time/step_s")


def _curve(run: RunDir) -> list[dict]:
    """The training curve for README.txt: a few columns of every metrics.jsonl row."""
    if not run.metrics.exists():
        return []
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    return [{k: row.get(k) for k in CURVE_KEYS} for row in rows]


def _print_eval(when: str, ev: dict) -> None:
    acc = "n/a" if ev["accuracy"] is None else f"{ev['accuracy']:.3f}"
    print(f"torl: held-out eval {when}: accuracy {acc}, code ratio {ev['code_ratio']:.3f} "
          f"({ev['questions']} questions, greedy)", file=sys.stderr)
