"""The console shows one compact line per training step (torl.train.console), not TRL's raw dict."""

from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from torl.train.console import CompactProgress, step_line


def test_step_line_keeps_the_watched_numbers_and_names_alarms():
    logs = {"loss": 0.0123, "reward": -0.25, "rewards/accuracy": 0.375, "tools/code_ratio": 0.5,
            "signal/informative_groups": 1.0, "signal/groups": 2.0, "time/step_s": 41.7, "completions/clipped_ratio": 0.8,
            "health/alarm_entropy_collapse": 1, "health/alarm_grad_spike": 0, "tools/pass_ratio": None}
    line = step_line(3, 4, logs)
    assert line == ("step 3/4 | reward -0.250 | acc 0.375 | code 0.50 | signal 1/2 | loss 0.0123 | step 42s"
                    " | alarms: entropy_collapse")
    assert "\n" not in line and "clipped" not in line


def test_missing_and_null_numbers_are_left_out():
    assert step_line(1, -1, {"loss": 1.0, "reward": None, "rewards/accuracy": float("nan")}) == "step 1 | loss 1"


class _Bar:
    def __init__(self):
        self.lines = []

    def write(self, s):
        self.lines.append(s)


def test_callback_writes_one_line_per_training_log_and_nothing_for_other_logs(tmp_path):
    cb = CompactProgress()
    assert isinstance(cb, ProgressCallback)  # the trainer's progress bar itself, so tqdm still shows
    cb.training_bar = _Bar()
    state = TrainerState(max_steps=4, global_step=2)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    cb.on_log(args, state, TrainerControl(), logs={"loss": 0.5, "reward": 1.0, "x/y": 3})
    cb.on_log(args, state, TrainerControl(), logs={"train_runtime": 12.0})  # the end-of-train summary
    assert cb.training_bar.lines == ["step 2/4 | reward +1.000 | loss 0.5"]


def test_install_replaces_the_trainers_progress_bar(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    from torl.train import console

    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True))
    console.install(trainer)
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert CompactProgress in kinds and ProgressCallback not in kinds
