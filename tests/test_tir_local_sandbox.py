"""The TIR loop with the real LocalSandbox (isolated worker processes) and the default observation."""

from torl.engines.scripted import ScriptedEngine, ToyTokenizer
from torl.sandbox import LocalSandbox
from torl.sandbox.config import SandboxConfig
from torl.tir.loop import RolloutConfig, rollout_many

TURNS = [
    "```python\nimport sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 4, x))\n```\n```output\n",
    "```python\nprint(undefined_name)\n```\n```output\n",
    "The roots are \\boxed{-2, 2}.",
]


async def test_rollouts_against_the_local_sandbox():
    tok = ToyTokenizer()
    engine = ScriptedEngine(tok, TURNS, step_time=0.001)
    config = RolloutConfig(max_tool_calls=2, exec_timeout_s=20)
    async with LocalSandbox(SandboxConfig(workers=2)) as sandbox:
        trajs = await rollout_many(engine, sandbox, [tok.encode(f"Q{i}") for i in range(3)], config)
    for traj in trajs:
        assert not traj.sandbox_error and traj.num_calls == 2
        ok, failed = traj.calls
        assert ok.result.status.value == "ok" and ok.observation.strip() == "[-2, 2]"
        assert failed.result.status.value == "error" and "NameError" in failed.observation
        assert traj.text.endswith("\\boxed{-2, 2}.")
        assert sum(traj.loss_mask[c.token_start : c.token_end].count(1) for c in traj.calls) == 0


async def test_session_mode_keeps_state_between_calls():
    tok = ToyTokenizer()
    turns = ["```python\ny = 21\n```\n```output\n", "```python\nprint(y * 2)\n```\n```output\n", "\\boxed{42}"]
    engine = ScriptedEngine(tok, turns)
    async with LocalSandbox(SandboxConfig(workers=1, max_sessions=2)) as sandbox:
        [traj] = await rollout_many(engine, sandbox, [tok.encode("Q")], RolloutConfig(max_tool_calls=2, session=True))
    assert traj.calls[1].observation.strip() == "42"
