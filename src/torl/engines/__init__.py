"""Generation engines behind one async protocol (`torl.engines.base.Engine`).

`make_engine(name, model, **kw)` builds one by name; the heavy backends import lazily, so
choosing "transformers" never imports vLLM and vice versa.
"""

from __future__ import annotations

from torl.engines.base import Engine, Generation, SamplingParams

ENGINE_NAMES = ("transformers", "vllm", "openai", "scripted")


def make_engine(name: str, model=None, **kw) -> Engine:
    """Build an engine: "transformers" (embedded, CPU or one GPU), "vllm", "openai" (an
    OpenAI-compatible server: pass base_url= and tokenizer=), or "scripted" (tests: pass
    tokenizer= and script=)."""
    if name == "transformers":
        from torl.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, **kw)
    if name == "vllm":
        from torl.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, **kw)
    if name == "openai":
        from torl.engines.openai_engine import OpenAIEngine

        base_url = kw.pop("base_url", None)
        tokenizer = kw.pop("tokenizer", None)
        if base_url is None or tokenizer is None:
            raise ValueError("the openai engine needs base_url= (the server's /v1 URL) and tokenizer=")
        return OpenAIEngine(base_url, model, tokenizer, **kw)
    if name == "scripted":
        from torl.engines.scripted import ScriptedEngine

        return ScriptedEngine(kw.pop("tokenizer"), kw.pop("script"), **kw)
    raise ValueError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_NAMES)}")


__all__ = ["ENGINE_NAMES", "Engine", "Generation", "SamplingParams", "make_engine"]
