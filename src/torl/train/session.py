"""One training run's live objects — event loop, sandbox, model, engine, GRPOTrainer — and their lifetime.

`TrainingSession` reads in the order a run uses it: build (`__enter__`: task, sandbox, policy and
engine, rollouts, trainer, the callbacks that record each step), `train`, `evaluate`, close.

The engine comes from `engine_factory` (default `torl.train.rollout_engine.build_engine`), so a test can
hand in a scripted policy without patching anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Self

import torch

from torl.background_loop import BackgroundLoop
from torl.tir.loop import tool_renderer
from torl.train import console
from torl.train.config import health_config, make_sandbox, task_spec, zero_signal_mode
from torl.train.data import load_questions
from torl.train.heldout import evaluate_heldout
from torl.train.lora import lora_config
from torl.train.ranks import process_rank
from torl.train.rewards import TorlReward
from torl.train.rollout import DynamicSampling, ToolRolloutFunc
from torl.train.rollout_engine import build_engine, choose_engine
from torl.train.run_dir import RunDir
from torl.train.step_record import MetricsFileCallback, StepRecorder, StepReport
from torl.train.stopping import StopAfterMinutes, StopOnInterrupt
from torl.train.update.mismatch import resolve as resolve_mismatch
from torl.train.watch import HealthWatch
from torl.train.weight_sync import push_weights

# (engine kind, model, tokenizer, model path, GRPOConfig) -> (engine, sync_weights)
EngineFactory = Callable[..., tuple]


class TrainingSession:
    """Read top to bottom: build (task, sandbox, policy and engine, rollouts, trainer, what a step
    records), train, evaluate, close."""

    def __init__(self, torl_cfg, grpo_cfg, run: RunDir, engine_factory: EngineFactory | None = None) -> None:
        self.cfg, self.args, self.run = torl_cfg, grpo_cfg, run
        self.engine_factory = engine_factory or build_engine
        self.loop: BackgroundLoop | None = None
        self.sandbox = None
        self.engine = None
        self.trainer = None
        self.watch: HealthWatch | None = None

    # --- build
    def __enter__(self) -> Self:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; we know
        import torl.train.update.grpo  # noqa: F401 - TRL loads here, after that switch and before anything starts

        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        self._build_task()
        self.loop = BackgroundLoop("torl-rollout-loop")
        if self.cfg.max_tool_calls > 0:
            self.sandbox = self.loop.run(_async_make_sandbox(self.cfg))
        model, tokenizer = self._load_policy()
        self.engine, self.sync_weights = self.engine_factory(choose_engine(self.cfg.engine), model, tokenizer,
                                                             self.model_path, self.args)
        self._build_rollouts()
        report = self._build_trainer(model, tokenizer)
        self._attach_step_record(report)
        return self

    def _build_task(self) -> None:
        """The questions, and the task spec the run trains (and `torl eval --run` replays)."""
        cfg, args = self.cfg, self.args
        self.train_questions, self.heldout = load_questions(cfg, seed=args.seed)
        self.task = task_spec(cfg)
        self.template = self.task.prompt_template()
        if process_rank() == 0:
            self.task.save(self.run.root)  # `torl eval --run` evaluates with exactly this protocol

    def _load_policy(self):
        """`(model, tokenizer)` of the policy to train, in the trainer's precision."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from torl.engines.models import resolve_model

        model_path = resolve_model(self.cfg.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # TRL pads with it; it is masked out everywhere
        dtype = torch.bfloat16 if self.args.bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model_path = model_path
        return model, tokenizer

    def _build_rollouts(self) -> None:
        """The TRL `rollout_func`: the task's tool-integrated rollouts on the engine and sandbox."""
        cfg, args = self.cfg, self.args
        self.rollout_config = self.task.rollout_config(
            temperature=args.temperature, top_p=args.top_p,
            top_k=args.top_k if args.top_k and args.top_k > 0 else -1)
        self.recorder = StepRecorder()
        dynamic = None
        if cfg.dynamic_sampling:
            dynamic = DynamicSampling(self.train_questions, self.task.reward_scheme, cfg.dynamic_sampling_max_rounds)
        self.rollout_func = ToolRolloutFunc(
            engine=self.engine, sandbox=self.sandbox, loop=self.loop, template=self.template,
            rollout_config=self.rollout_config, questions=self.train_questions, recorder=self.recorder,
            max_sandbox_error_ratio=cfg.max_sandbox_error_ratio, dynamic_sampling=dynamic,
            sync_weights=self.sync_weights, filter_void_turns=cfg.filter_void_turns,
        )

    def _build_trainer(self, model, tokenizer) -> StepReport:
        """The `ToolGRPOTrainer` over the rollouts and the reward; returns the after-scoring step report."""
        from datasets import Dataset

        from torl.train.update.grpo import ToolGRPOTrainer

        cfg, args = self.cfg, self.args
        correct, measure = resolve_mismatch(cfg.importance_sampling_correction, cfg.mismatch_metrics,
                                            choose_engine(cfg.engine))
        # the prompt the model saw, for the dumps: under tool_calls with the tools' schemas (the loop's own renderer)
        tools = tool_renderer(tokenizer, self.rollout_config.toolset) if self.rollout_config.protocol == "tool_calls" else None
        report = StepReport(self.recorder, self.run.samples if cfg.dump_samples else None,
                            render_prompt=lambda q: self.template.render(q, tokenizer, tool_renderer=tools), rank=process_rank(),
                            health=cfg.health_checks, max_rows=cfg.dump_samples_max,
                            with_ids=cfg.dump_sample_ids)
        dataset = Dataset.from_list([{"prompt": q["problem"], **q} for q in self.train_questions])
        self.trainer = ToolGRPOTrainer(
            model=model, reward_funcs=[TorlReward(self.task.reward_scheme, self.recorder)], args=args,
            train_dataset=dataset, processing_class=tokenizer, rollout_func=self.rollout_func,
            peft_config=lora_config(cfg),  # LoRA: TRL wraps `model` in place, so the engine runs the adapter too
            zero_signal_updates=zero_signal_mode(cfg), after_scoring=[report],
            share_prompt_forward=cfg.share_prompt_forward,
            sampler_correction=correct, mismatch_metrics=measure,  # torl.train.update.mismatch
            contract_dump=lambda step: self.run.contract_violation_file(step, process_rank()),
        )
        return report

    def _attach_step_record(self, report: StepReport) -> None:
        """The trainer callbacks that log each step: metrics file, health watch, Ctrl-C, the console line."""
        cfg = self.cfg
        # First in line, so the keys it adds (time/step_s, time/update_s) reach tensorboard too.
        self.trainer.callback_handler.callbacks.insert(0, MetricsFileCallback(self.run.metrics, self.recorder))
        if cfg.health_checks:  # before the metrics file, so the row it writes has health/alarm_*
            self.watch = HealthWatch(health_config(cfg), self.run, report, stop_on_alarm=cfg.health_stop_on_alarm,
                                     main=process_rank() == 0)
            self.trainer.callback_handler.callbacks.insert(0, self.watch)
        self.stopper = StopOnInterrupt()
        self.trainer.add_callback(self.stopper)
        console.install(self.trainer)  # one readable line per step; the full dict stays in metrics.jsonl

    # --- train
    def train(self, checkpoint: str | None) -> str:
        """Run GRPO; returns "finished", "interrupted", "time budget used" or "stopped by health alarm
        <name>" (a checkpoint was saved in the last three)."""
        if checkpoint and self.watch is not None:
            self.watch.load(checkpoint)
        budget = None
        if self.cfg.max_minutes is not None:
            budget = StopAfterMinutes(self.cfg.max_minutes)
            self.trainer.add_callback(budget)
        self.stopper.install()
        try:
            self.trainer.train(resume_from_checkpoint=checkpoint)
        finally:
            self.stopper.uninstall()
        if self.stopper.requested:
            return "interrupted"
        if self.watch is not None and self.watch.stopped_by is not None:
            return f"stopped by health alarm {self.watch.stopped_by.name}"
        return "time budget used" if budget is not None and budget.fired else "finished"

    # --- evaluate
    def evaluate(self, when: str, reuse: bool = False) -> dict:
        """Greedy held-out rollouts; the main process runs them, every process gets the summary."""
        import json

        from accelerate.utils import broadcast_object_list

        out = self.run.heldout_rows(when)
        summary_path = self.run.heldout_summary(when)
        if reuse and summary_path.exists():  # resumed run: the "before" numbers are from the original start
            return json.loads(summary_path.read_text())
        if self.sync_weights and self.trainer is not None:
            push_weights(self.trainer, self.engine, self.loop)  # a collective under ZeRO-3/FSDP: every rank
        accelerator = self.trainer.accelerator
        result = [None]
        if accelerator.is_main_process:
            result[0] = self._evaluate_here(out)
            summary_path.write_text(json.dumps(result[0], indent=2) + "\n")
        if accelerator.num_processes > 1:
            broadcast_object_list(result, from_process=0)  # also keeps the others waiting meanwhile
        return result[0]

    def _evaluate_here(self, out) -> dict:
        model = self.trainer.model
        was_training = model.training
        model.eval()
        try:
            rollout = self.rollout_func  # the same engine/sandbox wrappers (and stop strings) as training
            return evaluate_heldout(rollout.engine, rollout.sandbox, self.loop, self.template, self.heldout,
                                    self.rollout_config, self.task.reward_scheme, out)
        finally:
            model.train(was_training)

    # --- what the run's summary says about it
    def summary_base(self) -> dict:
        return {"model": self.cfg.model, "template": self.cfg.template, "max_tool_calls": self.cfg.max_tool_calls,
                "train_questions": len(self.train_questions), "heldout_questions": len(self.heldout),
                "engine": type(self.engine).__name__}

    def health_summary(self) -> list[str]:
        """The README's health lines (`HealthMonitor.summary_lines`)."""
        if self.watch is None:
            return ["health: checks off (health_checks: false)"]
        return self.watch.monitor.summary_lines()

    # --- close
    def __exit__(self, *exc) -> None:
        if self.loop is not None:
            for closer in (self.engine, self.sandbox):
                if closer is not None:
                    try:
                        self.loop.run(closer.aclose())
                    except Exception:  # noqa: BLE001, S110 - closing must not hide the real error
                        pass
            self.loop.close()


async def _async_make_sandbox(cfg):
    # Created on the background loop: backends bind their pipes and clients to the loop they start on.
    return make_sandbox(cfg)
