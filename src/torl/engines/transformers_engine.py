"""`TransformersEngine`: the embedded default engine (CPU or one GPU), batching concurrent requests.

Concurrent `generate` calls queue up; a background task takes up to `max_batch_size` of them,
left-pads them into one batch and decodes step by step with a KV cache in a worker thread (the
event loop stays free for sandbox calls). Each sequence stops on its own (EOS, its stop strings,
its `max_tokens`) and its caller is answered at once; finished rows leave the batch. Requests
that arrive meanwhile (a trajectory back from the sandbox) are prefilled and join the running
batch at the next step, right-aligned with masked padding on the left (`admit_mid_batch`).

What makes it fast on a CPU (bench/generate.py measures it against `model.generate` and vLLM):
prompts are mostly the same template, so the batch's common prefix is computed once and each
row's cache is ``[shared prefix | padding | own suffix]`` (32 few-shot prompts of 143 tokens
share 130: the prompt work drops ~8x), and that prefix's keys and values are kept for the next
batch while the weights stay the same (`cache_prefix`); identical prompts
(a GRPO group) are computed once; the KV cache is written into preallocated room instead of
re-concatenated at every token, and finished rows are closed up in place; the whole batch is
sampled in a few tensor operations. None of this changes what is sampled: a seed gives the same
tokens with each switch off (`share_prefixes`, `preallocate_cache`, `cache_prefix`,
`admit_mid_batch`), a seeded request the same tokens alone or in any batch, and the logprobs equal
the trainer's forward pass.

Why not transformers' continuous-batching API (`generate_batch` / `init_continuous_batching`)?
In 5.19 it has no per-request stop strings, temperatures or seeds, all of which the TIR loop
needs; this loop is short and exact.

Logprobs: the log-probability of the sampled token under the *tempered* distribution,
``log_softmax(logits / temperature)``, taken before top-k/top-p truncation -- the quantity TRL's
GRPO computes for its policy ratio (it also divides logits by the temperature), and what vLLM
returns with ``logprobs_mode="processed_logprobs"``. Greedy decoding (temperature 0) reports the
raw distribution (temperature 1).

The engine can share the very same ``nn.Module`` with a trainer (pass the module): generation
then always sees the trainer's current weights; `load_weights` copies tensors in by name for the
case where they live elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
from collections.abc import Iterable, Sequence

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from torl.engines.base import Engine, Generation, SamplingParams

MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward


@dataclasses.dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    future: asyncio.Future
    token_ids: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)


class TransformersEngine(Engine):
    def __init__(
        self,
        model_or_path,
        *,
        tokenizer=None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 32,
        seed: int = 0,
        share_prefixes: bool = True,
        preallocate_cache: bool = True,
        cache_prefix: bool = True,
        admit_mid_batch: bool = True,
        pack_weights: bool = True,
    ):
        """`model_or_path`: a loaded causal LM (shared, not copied), or a name for `resolve_model`
        (HF id, local path, ``smollm2-135m``). `dtype` defaults to float32 on CPU, bfloat16 on GPU.
        `share_prefixes`, `preallocate_cache`, `cache_prefix`, `admit_mid_batch` and `pack_weights`
        only make it faster: turned off, a seed still gives the same tokens
        (tests/test_engine_transformers.py). `pack_weights` applies on CPU to float32 linear layers
        and keeps a second copy of their weights (remade after the weights change)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model_or_path, torch.nn.Module):
            self.model = model_or_path
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_or_path.name_or_path)
        else:
            from torl.engines.models import resolve_model

            path = resolve_model(str(model_or_path))
            if isinstance(dtype, str):
                dtype = getattr(torch, dtype)
            dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        self.device = torch.device(device)
        self.max_batch_size = max_batch_size
        self.share_prefixes = share_prefixes
        self.preallocate_cache = preallocate_cache
        self.cache_prefix = cache_prefix
        self.admit_mid_batch = admit_mid_batch
        self._packed = _PackedLinears() if pack_weights and _PackedLinears.available(self.device) else None
        self._prefix: _PrefixKV | None = None  # the last shared prefix's keys and values, for the next batch
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self._eos_ids = set(eos)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (eos[0] if eos else 0)
        self._pending: list[_Request] = []
        self._pending_lock = threading.Lock()
        self._server: asyncio.Task | None = None
        self._weights_lock = asyncio.Lock()  # a weight update never lands mid-batch

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("generate() needs a non-empty prompt")
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        request = _Request(list(prompt_ids), params, asyncio.get_running_loop().create_future())
        with self._pending_lock:  # the decoding thread takes arrivals from this list mid-batch
            self._pending.append(request)
        if self._server is None or self._server.done():
            self._server = asyncio.create_task(self._serve())
        return await request.future

    async def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy tensors into the model by parameter/buffer name (between batches)."""
        async with self._weights_lock:
            self._prefix = None
            targets = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
            with torch.no_grad():
                for name, tensor in named_tensors:
                    if name not in targets:
                        raise KeyError(f"load_weights: the model has no parameter {name!r}")
                    targets[name].copy_(tensor.to(device=targets[name].device, dtype=targets[name].dtype))

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.cancel()
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for request in pending:
            if not request.future.done():
                request.future.cancel()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._take_pending(self.max_batch_size)
            async with self._weights_lock:
                try:
                    await asyncio.to_thread(self._run_batch, batch, loop)
                except Exception as error:  # noqa: BLE001 - answer every caller rather than hang them
                    for request in batch:
                        loop.call_soon_threadsafe(_set_exception, request.future, error)

    def _run_batch(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), (self._packed.installed(model) if self._packed else contextlib.nullcontext()):
                self._decode(batch, loop)
        finally:
            model.train(was_training)

    def _decode(self, batch: list[_Request], loop: asyncio.AbstractEventLoop) -> None:
        """Decode `batch` until every row has finished. With `admit_mid_batch`, requests that
        arrive meanwhile are prefilled and join the running batch at the next step (appended to
        `batch`, so an error still answers them)."""
        cache, logits, mask, positions, running = self._start(batch)
        admissible = self.admit_mid_batch and all(type(layer) in (DynamicLayer, _ReservedLayer)
                                                  for layer in cache.layers)
        weights = _weights_fingerprint(self.model)  # what this batch's cache and packed copies were made with
        while True:
            next_tokens, keep = self._sample_and_answer(running, logits, loop)
            if len(keep) < len(running):
                rows = torch.tensor(keep, dtype=torch.long, device=self.device)
                if keep:
                    cache.batch_select_indices(rows)
                mask, positions = mask[rows], positions[rows]
                running = [running[row] for row in keep]
            # after a weight change (an optimizer step) a request waits for the next batch, which is
            # made with the new weights: this one's packed copies and cache hold the old ones. The
            # fingerprint walks every parameter, so it is taken only when a request is waiting (an
            # unlocked look: one missed now is seen at the next step).
            if (admissible and len(running) < self.max_batch_size and self._pending
                    and _weights_fingerprint(self.model) == weights):
                arrived = self._take_pending(self.max_batch_size - len(running))
                if arrived:
                    batch.extend(arrived)
                    new_cache, new_logits, new_mask, new_positions, new_running = self._start(arrived)
                    new_tokens, new_keep = self._sample_and_answer(new_running, new_logits, loop)
                    if new_keep:
                        rows = torch.tensor(new_keep, dtype=torch.long, device=self.device)
                        new_cache.batch_select_indices(rows)
                        if running:
                            mask = _merge_into(cache, mask, new_cache, new_mask[rows])
                            positions = torch.cat([positions, new_positions[rows]])
                        else:  # the old rows all finished: the arrivals' cache is the batch's now
                            cache, mask, positions = new_cache, new_mask[rows], new_positions[rows]
                        running += [new_running[row] for row in new_keep]
                        next_tokens += new_tokens
            if not running:
                return
            mask = torch.cat([mask, mask.new_ones(len(running), 1)], dim=1)
            positions = positions + 1
            step = torch.tensor(next_tokens, device=self.device).unsqueeze(1)
            out = self.model(input_ids=step, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1, :]

    def _start(self, requests: list[_Request]):
        """A new cache holding `requests`' prompts: (cache, last logits, attention mask, the last
        positions [rows, 1], the running rows as (request, generator))."""
        reserve = max(r.params.max_tokens for r in requests)
        cache = _new_cache(self.model, reserve if self.preallocate_cache else None)
        logits, mask, positions = self._prefill(requests, cache)
        running = [(r, self._request_generator(r.params)) for r in requests]
        return cache, logits, mask, positions[:, -1:], running

    def _sample_and_answer(self, running, logits, loop) -> tuple[list[int], list[int]]:
        """Sample a token for every running row and answer the requests that finished; return the
        tokens of the rows that go on and their row numbers."""
        tokens, logprobs = _sample_rows(logits, [r.params for r, _ in running], [g for _, g in running])
        next_tokens, keep = [], []
        for row, ((request, _), token, logprob) in enumerate(zip(running, tokens, logprobs)):
            request.token_ids.append(token)
            request.logprobs.append(logprob)
            finished = self._finish_reason(request)
            if finished is None:
                next_tokens.append(token)
                keep.append(row)
                continue
            reason, stop = finished
            generation = Generation(
                token_ids=request.token_ids,
                logprobs=request.logprobs if request.params.logprobs else None,
                finish_reason=reason,
                stop_reason=stop,
                text=self.tokenizer.decode(request.token_ids, skip_special_tokens=True),
            )
            loop.call_soon_threadsafe(_set_result, request.future, generation)
        return next_tokens, keep

    def _take_pending(self, limit: int) -> list[_Request]:
        with self._pending_lock:
            taken = self._pending[:limit]
            del self._pending[:limit]
        return taken

    def _prefill(self, batch: list[_Request], cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fill `cache` with the batch's prompts; return the last position's logits, the attention
        mask and the position ids, one row per request.

        Identical prompts (a GRPO group's samples) are computed once and their cache rows repeated.
        With `share_prefixes`, the distinct prompts' common prefix (a template's instructions and
        examples) is computed once too, and each row's cache reads
        ``[shared prefix | padding | its own suffix]`` -- padding masked out, positions counted
        over real tokens only, so each token sees exactly its own prompt before it. Only the
        last position's logits are kept, so no (batch x prompt x vocab) tensor is made.
        """
        index: dict[tuple[int, ...], int] = {}
        rows = [index.setdefault(tuple(r.prompt), len(index)) for r in batch]
        unique = [list(p) for p in index]
        # every prompt keeps at least its last token for its own forward (its logits)
        common = _common_prefix_length(unique) if len(unique) > 1 else len(unique[0]) - 1
        shared = common if self.share_prefixes and len(unique) > 1 else 0
        reused = self._reusable_prefix(unique[0][:common]) if self.cache_prefix else 0
        shared = max(shared, reused)
        if shared < MIN_SHARED_PREFIX:
            shared = reused = 0
        if shared:
            if reused:
                for layer, (keys, values) in enumerate(self._prefix.layers):
                    cache.update(keys[:, :, :reused], values[:, :, :reused], layer)
            if shared > reused:
                prefix = torch.tensor([unique[0][reused:shared]], device=self.device)
                self.model(input_ids=prefix, position_ids=torch.arange(reused, shared, device=self.device)[None],
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
                if self.cache_prefix:
                    self._remember_prefix(unique[0][:shared], cache)
            cache.batch_select_indices(torch.zeros(len(unique), dtype=torch.long, device=self.device))
        suffixes = [p[shared:] for p in unique]
        width = max(len(s) for s in suffixes)
        ids = torch.tensor([[self._pad_id] * (width - len(s)) + s for s in suffixes], device=self.device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
                            device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions[:, shared:],
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        if len(unique) < len(batch):
            select = torch.tensor(rows, device=self.device)
            cache.batch_select_indices(select)
            logits, mask, positions = logits[select], mask[select], positions[select]
        return logits, mask, positions

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many leading `tokens` the remembered prefix holds keys and values for (0 if the
        weights changed since it was computed)."""
        if self._prefix is None:
            return 0
        if self._prefix.fingerprint != _weights_fingerprint(self.model):
            self._prefix = None
            return 0
        return _common_prefix_length([self._prefix.ids + [-1], tokens + [-2]])

    def _remember_prefix(self, ids: list[int], cache) -> None:
        """Keep the keys and values of `ids` (the batch's shared prefix, all of `cache` so far)
        for later batches that start the same way (the template's instructions and examples)."""
        if not all(type(layer) in (DynamicLayer, _ReservedLayer) for layer in cache.layers):
            return  # sliding-window or other special layers: not worth the bookkeeping
        layers = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
        self._prefix = _PrefixKV(list(ids), layers, _weights_fingerprint(self.model))

    def _finish_reason(self, request: _Request) -> tuple[str, str | int | None] | None:
        token = request.token_ids[-1]
        if token in self._eos_ids:
            return "stop", token
        if request.params.stop:
            # A stop string of n characters spans at most n (+ a few partial-byte) tokens.
            window = max(len(s) for s in request.params.stop) + 4
            tail = self.tokenizer.decode(request.token_ids[-window:], skip_special_tokens=True)
            for stop in request.params.stop:
                if stop in tail:
                    return "stop", stop
        if len(request.token_ids) >= request.params.max_tokens:
            return "length", None
        return None

    def _request_generator(self, params: SamplingParams) -> torch.Generator:
        if params.seed is None:
            return self._generator
        return torch.Generator(device=self.device).manual_seed(params.seed)


def _merge_into(cache, mask: torch.Tensor, other, other_mask: torch.Tensor) -> torch.Tensor:
    """Append `other`'s rows to `cache`, right-aligned: the shorter side gets masked padding on
    the left (as a left-padded batch would); return the merged attention mask."""
    width = max(mask.shape[1], other_mask.shape[1])
    for layer, extra in zip(cache.layers, other.layers):
        keys = _right_aligned([layer.keys, extra.keys], width)
        values = _right_aligned([layer.values, extra.values], width)
        if isinstance(layer, _ReservedLayer):
            layer.assign(keys, values)
        else:
            layer.keys, layer.values = keys, values
    return torch.cat([_left_pad(mask, width), _left_pad(other_mask, width)])


def _right_aligned(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    first = parts[0]
    out = first.new_zeros(sum(p.shape[0] for p in parts), first.shape[1], width, first.shape[3])
    row = 0
    for part in parts:
        out[row:row + part.shape[0], :, width - part.shape[2]:] = part
        row += part.shape[0]
    return out


def _left_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([mask.new_zeros(mask.shape[0], width - mask.shape[1]), mask], dim=1)


@dataclasses.dataclass
class _PrefixKV:
    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [1, heads, len(ids), dim]
    fingerprint: tuple


_optimizer_steps = 0  # torch optimizer steps taken anywhere in this process


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def _weights_fingerprint(model) -> tuple:
    """Changes whenever the weights may have: any torch optimizer step (fused AdamW writes without
    bumping version counters), a parameter replaced (its storage) or written in place (its version
    counter: `copy_`, `load_weights`), or a PEFT adapter switched, disabled or merged. Not seen:
    writes through `.data` outside an optimizer step (build a new engine after those)."""
    identity = tuple((p.data_ptr(), p._version) for p in model.parameters())
    adapters = tuple((getattr(m, "disable_adapters", None), str(getattr(m, "active_adapters", None)),
                      str(getattr(m, "merged_adapters", None)))
                     for m in model.modules() if hasattr(m, "active_adapters"))
    return _optimizer_steps, identity, adapters


class _PackedLinears:
    """Copies of a model's float32 `nn.Linear` weights in oneDNN's blocked layout, and a context in
    which those layers multiply by them. On CPU, MKL's GEMM is slow for the few rows of a decode
    step (a step with 2 live rows cost 1.5x one with 1); per step, the packed product was 1.1-1.5x
    as fast at 2-32 rows (bench/generate.py --batch-sweep --ablate pack_weights) and matches
    `F.linear` to float rounding. One row keeps `F.linear` (as fast there). The copies are remade when `_weights_fingerprint` changes (an optimizer step,
    `load_weights`, an adapter switched)."""

    HINT = 8  # rows oneDNN picks its layout for; the result does not depend on it, the speed barely

    def __init__(self):
        self.fingerprint, self.packs = None, {}

    @staticmethod
    def available(device: torch.device) -> bool:
        return (device.type == "cpu" and torch.backends.mkldnn.is_available()
                and not torch.ops.mkldnn._is_mkldnn_acl_supported())

    @contextlib.contextmanager
    def installed(self, model):
        linears = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
                   and m.weight.device.type == "cpu" and "forward" not in vars(m)]
        fingerprint = _weights_fingerprint(model)
        if fingerprint != self.fingerprint:
            self.packs = {}  # the old copies go before the new ones are made
            self.packs = {m: torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), self.HINT) for m in linears}
            self.fingerprint = fingerprint
        try:
            for m in linears:
                if m in self.packs:
                    m.forward = _packed_forward(m, self.packs[m])
            yield
        finally:
            for m in linears:
                vars(m).pop("forward", None)


def _packed_forward(linear: torch.nn.Linear, packed: torch.Tensor):
    def forward(x: torch.Tensor) -> torch.Tensor:
        # one row: F.linear is as fast; grad mode (thread-local): a trainer's forward, never the engine's
        if x.numel() == x.shape[-1] or x.dtype != torch.float32 or torch.is_grad_enabled():
            return torch.nn.functional.linear(x, linear.weight, linear.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, linear.bias, "none", [], "")
    return forward


def _common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (its logits)."""
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _new_cache(model, reserve: int | None):
    """A `DynamicCache` for `model`; with `reserve`, its full-attention layers write into
    preallocated room for `reserve` more tokens instead of re-concatenating the whole cache at every
    step (the same values, without a copy of the cache per token)."""
    cache = DynamicCache(config=model.config)
    if reserve is not None:
        cache.layers = [_ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


class _ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into buffers with room to grow: new
    positions are written in place, and rows that leave the batch are closed up in place too."""

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve, self.length, self.rows = reserve, 0, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._key_buffer = self._value_buffer = None
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._reallocate(key_states.shape[0], end + self.reserve, key_states, value_states)
        self.rows = key_states.shape[0]
        self._key_buffer[:self.rows, :, self.length:end].copy_(key_states)
        self._value_buffer[:self.rows, :, self.length:end].copy_(value_states)
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length == 0:
            return
        keep = indices.tolist()
        if all(a < b for a, b in itertools.pairwise(keep)) and len(keep) <= self.rows:
            # rows leaving the batch: move the later rows up in place (no new buffer, rows before
            # the first gap stay where they are)
            first = next((i for i, row in enumerate(keep) if row != i), len(keep))
            if first < len(keep):
                moved = indices[first:]
                end = len(keep)
                self._key_buffer[first:end, :, :self.length] = self._key_buffer[moved, :, :self.length]
                self._value_buffer[first:end, :, :self.length] = self._value_buffer[moved, :, :self.length]
        else:
            self._key_buffer = _select_rows(self._key_buffer, indices, self.length)
            self._value_buffer = _select_rows(self._value_buffer, indices, self.length)
        self.rows = len(keep)
        self._expose()

    def assign(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold exactly `keys` and `values` (rows x heads x length x dim), with room to grow."""
        self.length = 0
        self._key_buffer = None
        self._reallocate(keys.shape[0], keys.shape[2] + self.reserve, keys, values)
        self._key_buffer[:, :, :keys.shape[2]].copy_(keys)
        self._value_buffer[:, :, :keys.shape[2]].copy_(values)
        self.rows, self.length = keys.shape[0], keys.shape[2]
        self._expose()

    def _reallocate(self, batch: int, capacity: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        new_keys = keys.new_empty(batch, keys.shape[1], capacity, keys.shape[3])
        new_values = values.new_empty(batch, values.shape[1], capacity, values.shape[3])
        if self.length:
            new_keys[:, :, :self.length].copy_(self.keys)
            new_values[:, :, :self.length].copy_(self.values)
        self._key_buffer, self._value_buffer = new_keys, new_values

    def _expose(self) -> None:
        self.keys = self._key_buffer[:self.rows, :, :self.length]
        self.values = self._value_buffer[:self.rows, :, :self.length]


def _select_rows(buffer: torch.Tensor, indices: torch.Tensor, length: int) -> torch.Tensor:
    """`buffer`'s rows `indices` (filled part copied), keeping its capacity."""
    out = buffer.new_empty(len(indices), *buffer.shape[1:])
    out[:, :, :length].copy_(buffer[indices, :, :length])
    return out


def _sample_rows(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
                 ) -> tuple[list[int], list[float]]:
    """One token per row of `logits`, with its (tempered, untruncated) logprob.

    The whole batch is tempered, normalised and sampled in a few tensor operations (not one
    Python loop over the rows per step). A row's token depends only on its own logits and its own
    generator, so a seeded request samples the same tokens alone or in any batch. The draw is an
    exponential race (Gumbel-max): the token maximising p_i / E_i, with E_i ~ Exp(1) per token, is
    token i with probability p_i. A rounding-level change in the logits (another kernel, another
    batch shape) changes that token only when the two best p_i / E_i tie to within the change;
    the inverse CDF it replaced moved its draw whenever u fell that close to any of the 49k
    cumulative boundaries, which happened every few thousand tokens.
    Greedy rows (temperature 0) take the argmax, report the raw distribution and draw nothing.
    """
    logits = logits.float()
    greedy = [p.temperature <= 1e-5 for p in params]
    temperatures = torch.tensor([1.0 if g else p.temperature for g, p in zip(greedy, params)],
                                dtype=logits.dtype, device=logits.device).unsqueeze(1)
    scaled = logits / temperatures
    logprobs = torch.log_softmax(scaled, -1)
    probs = logprobs.exp()
    for row, p in enumerate(params):
        if not greedy[row] and (p.top_k > 0 or p.top_p < 1.0):
            probs[row] = torch.softmax(_truncate(scaled[row], p), -1)
    device, vocab = logits.device, logits.shape[-1]
    noise = torch.stack([torch.ones(vocab, device=device) if g
                         else torch.empty(vocab, device=gen.device).exponential_(generator=gen).to(device)
                         for g, gen in zip(greedy, generators)])
    tokens = (probs / noise.clamp_(min=torch.finfo(noise.dtype).tiny)).argmax(-1)  # a token of p = 0 never wins
    if any(greedy):
        tokens = torch.where(torch.tensor(greedy, device=device), logits.argmax(-1), tokens)
    chosen = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
    token_list, logprob_list = tokens.tolist(), chosen.tolist()
    return token_list, logprob_list


def _truncate(scaled: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """`scaled` with the tokens outside top-k / top-p set to -inf (the token crossing top_p stays)."""
    filtered = scaled
    if params.top_k > 0:
        kth = torch.topk(filtered, min(params.top_k, filtered.numel())).values[-1]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop = probs.cumsum(-1) - probs > params.top_p
        filtered = filtered.scatter(0, order[drop], float("-inf"))
    return filtered


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
