"""The TIR protocol: prompt templates, code-block parsing, the per-trajectory loop, `Trajectory`."""

from torl.tir.loop import RolloutConfig, SandboxFailure, rollout, rollout_many
from torl.tir.parsing import complete_python_blocks
from torl.tir.templates import (
    PromptTemplate,
    get_template,
    register_template,
    template_from_config,
    template_names,
)
from torl.tir.trajectory import SkippedCall, ToolCall, Trajectory

__all__ = [
    "PromptTemplate", "RolloutConfig", "SandboxFailure", "SkippedCall", "ToolCall", "Trajectory",
    "complete_python_blocks", "get_template", "register_template", "rollout", "rollout_many",
    "template_from_config", "template_names",
]
