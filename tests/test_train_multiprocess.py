"""`torl train` under torchrun with 2 processes on CPU (gloo): the multi-GPU launch path minus CUDA.

Each process rolls out its own slice of the batch with its own sandbox and engine; rank 0 alone
writes the run directory's shared files and runs the held-out evaluation, the others wait for it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_share_one_run_directory(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, tiny_model_dir, engine="transformers", train_tasks=["arithmetic"],
                         train_task_count=16, eval_holdout=4, eval_before_after=True, max_response_tokens=24,
                         learning_rate=None, save_steps=2)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "torl.cli", "train", "--config", str(recipe)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: a hang is killed whole
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"2-process training hung; last output:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("torl: ")]
    # printed once (rank 0), not once per process
    assert sum("held-out eval before" in line for line in lines) == 1
    assert sum("held-out eval after" in line for line in lines) == 1
    assert sum("run directory" in line for line in lines) == 1

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # every process dumped its own slice of each step
    dumps = sorted(p.name for p in (run / "samples").iterdir())
    assert dumps == ["step_000001.jsonl", "step_000001.rank1.jsonl", "step_000002.jsonl", "step_000002.rank1.jsonl"]
    per_rank = [sum(1 for _ in (run / "samples" / name).open()) for name in dumps[:2]]
    assert per_rank == [4, 4]  # a global batch of 2 x 4 = 2 prompts x num_generations, split over 2 processes
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert summary["eval_before"]["questions"] == 4
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()


def test_a_group_split_across_processes_samples_different_responses(tmp_path, tiny_model_dir):
    # num_generations 4 > per-device batch 2: each GRPO group is split over the two processes. The rank is
    # part of every sampling seed (torl.tir.seeds), so the halves must not duplicate each other.
    run = tmp_path / "run"
    recipe = tiny_recipe(tmp_path, tiny_model_dir, name="split.yaml", engine="transformers", max_tool_calls=0,
                         sandbox_workers=None, train_tasks=["arithmetic"], train_task_count=8,
                         per_device_train_batch_size=2, max_response_tokens=16, learning_rate=None, max_steps=1,
                         save_steps=100)
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "torl.cli", "train", "--config", str(recipe)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    halves = [[json.loads(line) for line in (run / "samples" / name).open()]
              for name in ("step_000001.jsonl", "step_000001.rank1.jsonl")]
    assert [r["question_id"] for r in halves[0]] == [r["question_id"] for r in halves[1]]  # one group, split
    texts = [r["trajectory"]["text"] for half in halves for r in half]
    assert len(set(texts)) == 4, texts
