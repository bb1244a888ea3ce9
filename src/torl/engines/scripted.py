"""`ScriptedEngine`: replays scripted turns through the real Engine protocol, for tests and benchmarks.

Each trajectory's turns are replayed in order: a `generate` call whose prompt extends an earlier
call's prompt + output continues that trajectory's script; any other prompt starts a new one.
Stop strings, EOS and `max_tokens` are honoured token by token like a real engine (a stop can end
mid-token: the whole token is kept), and a turn that runs out ends with the EOS token. Logprobs
are a deterministic function of the token id (`scripted_logprob`), so tests can check alignment.

With ``step_time > 0`` it simulates continuous batching: every decode step emits one token for
each running request (at most ``max_batch_size``) and takes ``step_time`` seconds for the whole
batch; new requests join at the next step.

`ToyTokenizer` is a tokenizer-free stand-in: text encodes one character per token, and a turn
given as a list of strings makes each string ONE token (to script tokens that straddle a stop).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from types import SimpleNamespace

from torl.engines.base import Engine, Generation, SamplingParams

Turn = str | list[int] | list[str]


def scripted_logprob(token_id: int) -> float:
    """The logprob ScriptedEngine reports for a token: distinct, negative, reproducible."""
    return -((token_id % 101) + 1) / 100.0


class ToyTokenizer:
    """Character-level tokenizer whose vocabulary grows on demand; id 0 is the EOS token."""

    eos_token = "<eos>"
    eos_token_id = 0
    pad_token_id = 0
    chat_template = None

    def __init__(self):
        self._pieces: list[str] = [self.eos_token]
        self._ids: dict[str, int] = {self.eos_token: 0}

    def piece_id(self, piece: str) -> int:
        if piece not in self._ids:
            self._ids[piece] = len(self._pieces)
            self._pieces.append(piece)
        return self._ids[piece]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.piece_id(ch) for ch in text]

    def __call__(self, text: str, add_special_tokens: bool = False):
        return SimpleNamespace(input_ids=self.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(self._pieces[i] for i in ids if not (skip_special_tokens and i == self.eos_token_id))


@dataclasses.dataclass
class _Request:
    tokens: list[int]             # the scripted turn (the EOS is appended when it runs out)
    params: SamplingParams
    future: asyncio.Future
    emitted: list[int] = dataclasses.field(default_factory=list)


class ScriptedEngine(Engine):
    """Replays `script` (a list of turns, the same for every trajectory, or a callable
    ``(prompt_ids, turn_index) -> turn``) with real stop/EOS/length semantics."""

    def __init__(
        self,
        tokenizer,
        script: Sequence[Turn] | Callable[[list[int], int], Turn],
        *,
        step_time: float = 0.0,
        max_batch_size: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.script = script
        self.step_time = step_time
        self.max_batch_size = max_batch_size
        self.calls = 0                 # generate() calls served
        self.decode_steps = 0          # simulated batch steps (step_time > 0)
        self._threads: dict[tuple[int, ...], list[int]] = {}  # context after a call -> next turn indices
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._stepper: asyncio.Task | None = None

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        prompt = list(prompt_ids)
        turn_index = self._claim_turn(prompt)
        request = _Request(self._turn_tokens(prompt, turn_index), params, asyncio.get_running_loop().create_future())
        self.calls += 1
        if self.step_time <= 0:
            while not self._emit(request):
                pass
        else:
            self._waiting.append(request)
            if self._stepper is None or self._stepper.done():
                self._stepper = asyncio.create_task(self._step_loop())
        generation = await request.future
        self._threads.setdefault(tuple(prompt + generation.token_ids), []).append(turn_index + 1)
        return generation

    def _claim_turn(self, prompt: list[int]) -> int:
        # The longest earlier context this prompt extends is this trajectory's previous turn.
        best = max((k for k in self._threads if len(k) <= len(prompt) and tuple(prompt[: len(k)]) == k), key=len, default=None)
        if best is None:
            return 0
        indices = self._threads[best]
        turn = indices.pop()
        if not indices:
            del self._threads[best]
        return turn

    def _turn_tokens(self, prompt: list[int], turn_index: int) -> list[int]:
        if callable(self.script):
            turn = self.script(prompt, turn_index)
        elif turn_index < len(self.script):
            turn = self.script[turn_index]
        else:
            raise IndexError(f"ScriptedEngine: the script has {len(self.script)} turns; turn {turn_index} was requested")
        if isinstance(turn, str):
            return list(self.tokenizer(turn, add_special_tokens=False).input_ids)
        if turn and isinstance(turn[0], str):
            if hasattr(self.tokenizer, "piece_id"):
                return [self.tokenizer.piece_id(piece) for piece in turn]
            return [i for piece in turn for i in self.tokenizer(piece, add_special_tokens=False).input_ids]
        return list(turn)

    def _emit(self, request: _Request) -> bool:
        """Emit the next token of `request`; resolve it and return True when it is finished."""
        eos = self.tokenizer.eos_token_id
        position = len(request.emitted)
        token = request.tokens[position] if position < len(request.tokens) else eos
        if token is None:  # a tokenizer without EOS: the turn just ends
            return self._finish(request, "stop", None)
        request.emitted.append(token)
        if token == eos:
            return self._finish(request, "stop", eos)
        if request.params.stop:
            text = self.tokenizer.decode(request.emitted, skip_special_tokens=True)
            for stop in request.params.stop:
                if stop in text:
                    return self._finish(request, "stop", stop)
        if len(request.emitted) >= request.params.max_tokens:
            return self._finish(request, "length", None)
        return False

    def _finish(self, request: _Request, reason: str, stop_reason) -> bool:
        ids = request.emitted
        request.future.set_result(
            Generation(
                token_ids=ids,
                logprobs=[scripted_logprob(t) for t in ids] if request.params.logprobs else None,
                finish_reason=reason,
                stop_reason=stop_reason,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
            )
        )
        return True

    async def _step_loop(self) -> None:
        while self._waiting or self._running:
            room = (self.max_batch_size or 1 << 30) - len(self._running)
            self._running += self._waiting[:room]
            del self._waiting[:room]
            await asyncio.sleep(self.step_time)
            self.decode_steps += 1
            self._running = [r for r in self._running if not self._emit(r)]
            await asyncio.sleep(0)  # let resolved trajectories submit their next turn before the next step
