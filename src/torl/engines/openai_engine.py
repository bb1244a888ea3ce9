"""`OpenAIEngine`: any OpenAI-compatible ``/v1/completions`` server (vLLM serve, SGLang,
llama.cpp server) behind torl's `Engine` protocol, over one pooled ``httpx.AsyncClient``.

Token-in/token-out over HTTP:

- Prompts go as token ids (``"prompt": [int, ...]``, part of the OpenAI completions API and
  accepted by vLLM, SGLang and llama.cpp). ``token_prompts="auto"`` falls back to the decoded
  text, once and with a warning, if the server rejects an id prompt; the server then
  re-tokenizes it, which can differ from the ids the rollout holds.
- Completions come back as exact token ids through vLLM's ``return_tokens_as_token_ids``: every
  logprob entry is then spelled ``"token_id:123"``, so we request ``logprobs=0`` (the sampled
  token's logprob only) even when the caller does not need logprobs. vLLM's
  ``include_stop_str_in_output`` keeps the matched stop string in the text, as our protocol
  wants; its token ids always include every sampled token.
- A server without those extensions returns token *strings*: we then re-tokenize the returned
  text (lossy: the model may have sampled a different segmentation), say so once with a
  warning, and keep logprobs only where their count still matches the ids.

Connection failures, 5xx and 429 answers are retried a bounded number of times with backoff;
then `ServerUnreachable` / `ServerError` names the URL. Infrastructure errors never come back
as a `Generation`.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Sequence
from typing import Literal

import httpx

from torl.engines.base import Engine, Generation, SamplingParams
from torl.errors import ServerError, ServerUnreachable

TOKEN_ID = re.compile(r"^token_id:(-?\d+)$")
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class OpenAIEngine(Engine):
    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer,
        *,
        api_key: str | None = None,
        max_connections: int = 64,
        timeout: float = 600.0,
        retries: int = 3,
        token_prompts: bool | Literal["auto"] = "auto",
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        """`base_url` ends in ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``); `model` is the name
        the server serves; `tokenizer` is the matching HF tokenizer (or a name/path for it).
        `timeout` bounds one request in seconds; `retries` is how many times a failed
        connection or a 5xx/429 answer is retried. `transport` is for tests (httpx.MockTransport)."""
        if token_prompts not in (True, False, "auto"):
            raise ValueError(f"token_prompts must be True, False or 'auto', got {token_prompts!r}")
        if retries < 0 or max_connections < 1:
            raise ValueError("retries must be >= 0 and max_connections >= 1")
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from torl.engines.models import resolve_model

            tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
        self.tokenizer = tokenizer
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/completions"
        self.model = model
        self.retries = retries
        self.backoff_s = backoff_s
        self.token_prompts = token_prompts
        self._warned: set[str] = set()
        self._slots = asyncio.Semaphore(max_connections)  # queue here, not in httpx's pool timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, pool=None),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("generate() needs a non-empty prompt")
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        payload = self._payload(params)
        # The decoded prompt already holds any BOS/special tokens: the server must not add more.
        text = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
        text_prompt = {**payload, "prompt": text, "add_special_tokens": False}
        if self.token_prompts is False:
            return self._parse(await self._post(text_prompt), params)
        try:
            return self._parse(await self._post({**payload, "prompt": list(prompt_ids)}), params)
        except ServerError as error:
            if self.token_prompts is True or error.status not in (400, 422):
                raise
            id_error = error
        try:  # "auto": does the same request go through as text?
            body = await self._post(text_prompt)
        except ServerError:
            raise id_error from None  # not a prompt-format problem: report the original answer
        self.token_prompts = False
        self._warn_once(
            "text-prompts",
            f"{self.url} rejected a token-id prompt ({id_error}); sending decoded text from now on "
            "(the server re-tokenizes it; pass token_prompts=True to make this an error)",
        )
        return self._parse(body, params)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _payload(self, params: SamplingParams) -> dict:
        payload = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
            "logprobs": 0,  # the sampled token's logprob; also carries the exact token ids
            "return_tokens_as_token_ids": True,  # vLLM: logprob tokens as "token_id:<id>"
            "include_stop_str_in_output": True,  # vLLM: the matched stop string stays in the text
            "skip_special_tokens": False,
        }
        if params.top_k > 0:
            payload["top_k"] = params.top_k
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    async def _post(self, payload: dict) -> dict:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                async with self._slots:
                    response = await self._client.post(self.url, json=payload)
            except (httpx.TransportError, OSError) as error:  # refused, reset, DNS, timeouts
                last = ServerUnreachable(
                    f"cannot reach the OpenAI-compatible server at {self.url} "
                    f"({type(error).__name__}: {error or 'no detail'}) after {attempt + 1} attempt(s): "
                    "start the server or fix base_url"
                )
                continue
            if response.status_code in RETRYABLE_STATUS:
                last = ServerError(response.status_code, self.url, _error_text(response))
                continue
            if response.status_code >= 400:
                raise ServerError(response.status_code, self.url, _error_text(response))
            try:
                return response.json()
            except ValueError as error:
                raise ServerError(response.status_code, self.url, f"answer is not JSON: {error}") from error
        assert last is not None
        raise last

    def _parse(self, body: dict, params: SamplingParams) -> Generation:
        try:
            choice = body["choices"][0]
        except (KeyError, IndexError, TypeError) as error:
            raise ServerError(200, self.url, f"answer has no choices: {str(body)[:200]}") from error
        text = choice.get("text") or ""
        finish_reason = choice.get("finish_reason")
        if finish_reason not in ("stop", "length"):
            raise ServerError(200, self.url, f"generation ended with finish_reason={finish_reason!r}")
        # vLLM reports the matched stop string / stop token id as stop_reason; SGLang as matched_stop.
        stop_reason = choice.get("stop_reason", choice.get("matched_stop"))
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("tokens") or []
        token_logprobs = logprobs.get("token_logprobs") or []

        exact = [TOKEN_ID.match(t) for t in tokens] if tokens else []
        if exact and all(exact):
            token_ids = [int(m.group(1)) for m in exact]
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        else:
            token_ids, text = self._retokenize(text, finish_reason, stop_reason, params)
        sampled = [float(lp) if lp is not None else None for lp in token_logprobs]
        keep_logprobs = params.logprobs and len(sampled) == len(token_ids) and None not in sampled
        if params.logprobs and not keep_logprobs:
            self._warn_once(
                "logprobs",
                f"{self.url} returned {len(sampled)} logprobs for {len(token_ids)} tokens; "
                "logprobs are dropped (None) where they cannot be aligned with the token ids",
            )
        if finish_reason == "stop" and stop_reason is None:
            stop_reason = self._infer_stop_reason(token_ids, text, params)
        return Generation(
            token_ids=token_ids,
            logprobs=sampled if keep_logprobs else None,
            finish_reason=finish_reason,
            stop_reason=stop_reason if finish_reason == "stop" else None,
            text=text,
        )

    def _retokenize(self, text: str, finish_reason: str, stop_reason, params: SamplingParams):
        """Fallback for servers without token ids: lossy, so it warns once."""
        self._warn_once(
            "retokenize",
            f"{self.url} did not return token ids (vLLM's return_tokens_as_token_ids); re-tokenizing "
            "the completion text, which may not be the token sequence the model sampled",
        )
        if finish_reason == "stop" and isinstance(stop_reason, str) and not text.endswith(stop_reason):
            text += stop_reason  # standard servers cut the stop string; our protocol keeps it
        return self.tokenizer.encode(text, add_special_tokens=False), text

    def _infer_stop_reason(self, token_ids: list[int], text: str, params: SamplingParams) -> str | int | None:
        if token_ids and token_ids[-1] == self.tokenizer.eos_token_id:
            return token_ids[-1]
        ends = [stop for stop in params.stop if stop in text[-(len(stop) + 16) :]]
        return ends[0] if ends else None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message", error) if isinstance(error, dict) else error
    return str(message)[:300]

