"""The `search` tool: BM25 over a local document collection (a JSONL corpus), as in Search-R1.

Corpus: one JSON object per line with ``"text"`` and optionally ``"id"`` and ``"title"``. The index
is built once per file (bm25s, English stopwords) and shared by every trajectory; a query returns
the top ``k`` documents with a positive score, each as ``[rank] title: text`` cut to
``max_doc_chars``, or a line saying nothing matched.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from torl.sandbox.result import ExecResult, ExecStatus
from torl.tools.registry import (
    Tool,
    ToolContext,
    ToolOutput,
    cap_output,
    check_arguments,
    error_output,
)

SEARCH_PARAMETERS = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What to look for (keywords work best)."},
                   "k": {"type": "integer", "description": "How many documents to return (default 3, at most 10)."}},
    "required": ["query"],
}


class SearchTool(Tool):
    name = "search"
    description = "Search the document collection and return the most relevant passages."
    parameters = SEARCH_PARAMETERS

    def __init__(self, documents: list[dict], *, k: int = 3, max_doc_chars: int = 400, max_output_chars: int = 1500,
                 timeout_s: float = 10.0, max_calls: int | None = None) -> None:
        import bm25s

        if not documents:
            raise ValueError("the search corpus is empty")
        self.documents, self.k, self.max_doc_chars = documents, k, max_doc_chars
        self.max_output_chars, self.timeout_s, self.max_calls = max_output_chars, timeout_s, max_calls
        self._bm25s = bm25s
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize([self._indexed_text(d) for d in documents], stopwords="en",
                                        show_progress=False), show_progress=False)

    @classmethod
    def from_jsonl(cls, path: str | Path, **kw) -> SearchTool:
        return _load(str(Path(path).expanduser().resolve()), tuple(sorted(kw.items())))

    @staticmethod
    def _indexed_text(doc: dict) -> str:
        return f"{doc.get('title', '')}\n{doc['text']}"

    def search(self, query: str, k: int | None = None) -> list[tuple[dict, float]]:
        k = max(1, min(int(k or self.k), 10, len(self.documents)))
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:  # only stopwords or punctuation: nothing can match
            return []
        ids, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [(self.documents[int(i)], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    async def call(self, arguments: dict, context: ToolContext) -> ToolOutput:
        problem = check_arguments(arguments, self.parameters)
        if problem:
            return error_output("bad_arguments", f"search: {problem}")
        try:
            hits = self.search(arguments["query"], arguments.get("k"))
        except Exception as e:  # noqa: BLE001 - whatever the query does to the index is reported, never a crash
            return error_output("tool_error", f"search failed: {type(e).__name__}: {e}")
        if not hits:
            text = f"No documents match {arguments['query']!r}."
        else:
            lines = []
            for rank, (doc, _score) in enumerate(hits, 1):
                body = doc["text"] if len(doc["text"]) <= self.max_doc_chars else doc["text"][: self.max_doc_chars] + "..."
                lines.append(f"[{rank}] {doc['title']}: {body}" if doc.get("title") else f"[{rank}] {body}")
            text = "\n".join(lines)
        capped = cap_output(text, self.max_output_chars)
        status = ExecStatus.OK if capped == text else ExecStatus.OUTPUT_LIMIT
        return ToolOutput(capped, ExecResult(status, stdout=capped, exit_code=0))


@functools.lru_cache(maxsize=4)
def _load(path: str, options: tuple) -> SearchTool:
    documents = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read search corpus {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n}: not a JSON line") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise ValueError(f"{path}:{n}: each line needs a \"text\" string")  # noqa: TRY004 - a user's file, one line
        documents.append(doc)
    return SearchTool(documents, **dict(options))
