"""`torl sft`: data → checked token ids and masks → TRL's SFTTrainer → a run directory.

The training loop, loss and optimizer are TRL's (`SFTTrainer` on a pre-tokenized dataset whose
`completion_mask` is 0 on the prompt and on every interpreter token; `completion_only_loss` turns
it into labels -100). torl supplies the data (`torl.sft.data`), the task spec and the run
directory in the training layout (`torl.run_layout`), so `torl eval --run RUN_DIR` evaluates the
model under its task spec and `torl train --model RUN_DIR` starts RL from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from torl.errors import UserError
from torl.sft.config import SftSettings, validate
from torl.sft.data import load_examples
from torl.train.ranks import is_main_process
from torl.train.run_dir import RunDir

DATA_FILE = "sft_data.jsonl"          # expert data written for this run (text form; id form under tool_calls)
DATA_REPORT = "sft_data_report.json"  # rows read, used, skipped; token counts
HELDOUT_FILE = "heldout_questions.jsonl"


def run_sft(settings: SftSettings, sft_cfg) -> int:
    """Train per the config; returns the process exit status."""
    started = time.time()
    task = validate(settings, sft_cfg)
    run = RunDir(settings.run_dir)
    main = is_main_process()  # under accelerate/torchrun, rank 0 alone writes the run directory's files
    if main and run.root.exists() and any(run.root.iterdir()):
        raise UserError(f"{run.root} already exists and is not empty; set another run_dir")
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from torl.engines.models import resolve_model

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    model_path = resolve_model(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of the loss
    with tempfile.TemporaryDirectory(prefix="torl-sft-") as scratch:
        # Everything is read and checked before the run directory exists: bad data leaves nothing behind.
        expert = None if settings.data else _write_expert_data(settings, sft_cfg.seed, Path(scratch), task, tokenizer)
        paths = list(settings.data) or [str(run.root / DATA_FILE)]
        examples, report = load_examples(list(settings.data) or [str(expert / DATA_FILE)], task, tokenizer,
                                         only_correct=settings.only_correct, eos=settings.add_eos)
        longest = max(len(ex.prompt_ids) + len(ex.completion_ids) for ex in examples)
        if sft_cfg.max_length is not None and longest > sft_cfg.max_length:
            raise UserError(f"an example has {longest} tokens, more than max_length={sft_cfg.max_length}; raise "
                            "max_length (cutting it would train on a response without its end)")
        if main:
            run.prepare(resume=False)
        if main and expert is not None:
            for name in (DATA_FILE, HELDOUT_FILE):
                if (expert / name).exists():
                    shutil.copy(expert / name, run.root / name)

    _point_trl_at_run_dir(sft_cfg, run)
    if main:
        task.save(run.root)  # `torl eval --run` / `torl train --model` use exactly this protocol
        run.config.write_text(yaml.safe_dump(
            {"torl_sft": dataclasses.asdict(settings), "data_files": paths, "sft": _plain(sft_cfg.to_dict())},
            sort_keys=False))
        (run.root / DATA_REPORT).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"torl: sft on {report.used} examples ({', '.join(f'{n} {k}' for k, n in report.forms.items())} form; "
          f"{report.model_tokens} model / {report.tool_tokens} interpreter tokens)", file=sys.stderr)

    from datasets import Dataset
    from trl import SFTTrainer

    from torl.train.lora import lora_config, save_merged_model
    from torl.train.step_record import MetricsFileCallback, StepRecorder
    from torl.train.stopping import StopOnInterrupt

    dtype = torch.bfloat16 if sft_cfg.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    dataset = Dataset.from_list([ex.features() for ex in examples])
    trainer = SFTTrainer(model=model, args=sft_cfg, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(settings))
    trainer.callback_handler.callbacks.insert(0, MetricsFileCallback(run.metrics, StepRecorder()))
    stopper = StopOnInterrupt()
    trainer.add_callback(stopper)
    stopper.install()
    try:
        trainer.train()
    finally:
        stopper.uninstall()
    status = "interrupted" if stopper.requested else "finished"
    step = trainer.state.global_step
    final = run.checkpoints / f"checkpoint-{step}"
    if step and not (final / "config.json").exists() and not (final / "adapter_config.json").exists():
        trainer.save_model(str(final))  # the trained model is always the last checkpoint
    model_dir = final
    if settings.lora_r:  # a collective under ZeRO-3/FSDP: every process; the main one writes
        model_dir = save_merged_model(trainer, tokenizer, run.root / "merged")
    if not main:
        return 0
    summary = {"kind": "sft", "status": status, "model": settings.model, "template": task.template,
               "max_tool_calls": task.max_tool_calls, "steps": step, "wall_s": time.time() - started,
               "data": paths, "data_report": report.to_dict(), "model_dir": str(model_dir),
               "curve": _curve(run)}
    run.summary.write_text(json.dumps(summary, indent=2) + "\n")
    run.readme.write_text(_readme(run.root, summary))
    print(f"torl: sft run directory {run.root} ({status}); see {run.readme}", file=sys.stderr)
    return 0


def _write_expert_data(settings: SftSettings, seed: int, out_dir: Path, task, tokenizer) -> Path:
    """Expert TIR rows for the training questions `torl train` would use with these task settings
    (protocol tool_calls: tool-call trajectories through the chat template, `torl.sft.tool_expert`)."""
    from torl.sft.expert import write_expert_data
    from torl.train.config import make_sandbox
    from torl.train.data import load_questions

    torl_cfg = settings.questions_config()
    train, heldout = load_questions(torl_cfg, seed=seed)
    if heldout:
        (out_dir / HELDOUT_FILE).write_text("".join(json.dumps(q) + "\n" for q in heldout))
    out = out_dir / DATA_FILE
    if task.protocol == "tool_calls":
        from torl.sft.tool_expert import write_tool_call_expert_data

        counts = write_tool_call_expert_data(train, out, lambda: make_sandbox(torl_cfg), task, tokenizer)
    else:
        counts = write_expert_data(train, out, lambda: make_sandbox(torl_cfg))
    print(f"torl: expert TIR data: {counts['written']} rows for {counts['questions']} training questions "
          f"({counts['dropped']} dropped)", file=sys.stderr)
    return out_dir


def _point_trl_at_run_dir(sft_cfg, run: RunDir) -> None:
    sft_cfg.output_dir = str(run.checkpoints)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.tensorboard)
    if not sft_cfg.report_to or sft_cfg.report_to == ["none"]:
        sft_cfg.report_to = ["tensorboard"]
    sft_cfg.logging_steps = 1
    sft_cfg.completion_only_loss = True  # completion_mask -> labels -100 on prompt and interpreter tokens


def _plain(d: dict) -> dict:
    return {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v) for k, v in d.items()}


CURVE_KEYS = ("step", "loss", "mean_token_accuracy", "grad_norm", "time/step_s")


def _curve(run: RunDir) -> list[dict]:
    if not run.metrics.exists():
        return []
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    return [{k: row.get(k) for k in CURVE_KEYS} for row in rows]


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _readme(root: Path, s: dict) -> str:
    r = s["data_report"]
    lines = [
        f"torl SFT run — {root}",
        f"finished: {time.strftime('%Y-%m-%d %H:%M:%S')}  status: {s['status']}",
        f"model: {s['model']}  template: {s['template']}  C (max tool calls): {s['max_tool_calls']}",
        f"steps: {s['steps']}  wall time: {s['wall_s']:.0f} s",
        f"data: {', '.join(s['data'])}",
        (f"  {r['used']} examples of {r['rows']} rows ({r['skipped_incorrect']} wrong, "
         f"{r['skipped_sandbox_error']} sandbox errors skipped); forms {r['forms']}"),
        (f"  loss on {r['model_tokens']} model tokens; {r['prompt_tokens']} prompt and {r['tool_tokens']} "
         "interpreter tokens are context (mask 0)"),
        "",
    ]
    if s["curve"]:
        lines.append("loss curve (mean over the model's tokens; metrics.jsonl has every metric):")
        lines.append(f"  {'step':>4s} {'loss':>8s} {'token acc':>9s} {'grad norm':>9s} {'step s':>7s}")
        for row in s["curve"]:
            lines.append(f"  {row['step']:>4d} {_num(row['loss'], 4):>8s} {_num(row['mean_token_accuracy']):>9s} "
                         f"{_num(row['grad_norm']):>9s} {_num(row['time/step_s'], 1):>7s}")
        lines.append("")
    lines += [
        f"trained model: {s['model_dir']}",
        f"  evaluate it with this run's task spec:  torl eval --run {root} --benchmarks ...",
        f"  start RL from it, same task spec:        torl train --config <recipe> --model {root}",
        "",
        "files:",
        "  config.yaml            resolved configuration (torl_sft, sft = TRL's SFTConfig)",
        "  task_spec.json         the protocol the data was rendered and masked under",
        f"  {DATA_REPORT:22s} rows read, used and skipped; token counts",
        "  metrics.jsonl          one row per step",
        "  checkpoints/           TRL checkpoints; the last is the trained model",
        "  tensorboard/           tensorboard --logdir tensorboard",
    ]
    return "\n".join(lines) + "\n"
