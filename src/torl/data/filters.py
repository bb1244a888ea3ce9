"""Filter: drop questions an outcome reward cannot grade fairly (ToRL removed proof-based and
ambiguous questions: 75,149 of its pool remained).

Each rule is a named function `(record, **params) -> reason | None`. Rules run in a fixed order
and a row is removed by the first rule that fires, so per-rule counts add up to the rows removed.
Every rule can be disabled and its parameters changed through the `rules` config:

    {"proof": {"enabled": True, "patterns": [...]}, "unparseable_answer": {"enabled": False}}
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable

from torl.data.records import DataError
from torl.data.report import StageReport

# -- individual rules ---------------------------------------------------------------------------


def missing_fields(record: dict, fields: tuple[str, ...] = ("problem", "answer")) -> str | None:
    """A required field is absent or blank (no problem text, or no gold answer was found)."""
    empty = [f for f in fields if not str(record.get(f) or "").strip()]
    return f"empty {', '.join(empty)}" if empty else None


# "prove" is a request wherever it stands; "show that" etc. only as an instruction (at the start
# of a sentence, clause or part, or after "and"), not as in "will the census show that ...".
_CLAUSE_START = r"(?:^|(?<=[.!?;:\n)])|(?<=\band)|(?<=,))\s*"
PROOF_PATTERNS = (
    r"\bprove\b", r"\bproves\b", r"\bprove or disprove\b", r"\bproof that\b",
    r"\b(?:give|provide|write|present) (?:a|an) (?:proof|argument)\b",
    _CLAUSE_START + r"(?:show|demonstrate|verify|explain why|justify)\b",
)


def proof(record: dict, patterns: tuple[str, ...] = PROOF_PATTERNS) -> str | None:
    """The question asks for a proof or an argument, which an answer check cannot grade."""
    for p in patterns:
        m = re.search(p, record["problem"], flags=re.IGNORECASE)
        if m:
            return f"matched {m.group(0)!r}"
    return None


_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|rm|bf)\s*\{([^{}]*)\}")


def multiple_choice(record: dict, letters: str = "ABCDE") -> str | None:
    """The gold answer is a choice letter (or a list of letters): a correct value in another form
    would be graded wrong, and guessing a letter is rewarded."""
    s = _WRAPPERS.sub(r"\1", str(record.get("answer", ""))).replace("$", "").strip()
    upper = rf"\(?[{letters}]\)?"
    lower = rf"\([{letters.lower()}]\)"
    for one in (upper, lower):
        if re.fullmatch(rf"{one}(?:\s*(?:,|and|or)\s*{one})*\.?", s):
            return f"gold is a choice letter {s!r}"
    return None


# Part markers of one family: (a)(b)…, (1)(2)…, (i)(ii)…, ①②…, each standing alone (not f(a)).
_PART_FAMILIES = {
    "letters": (r"\(?([a-h])\)", ["a", "b"]),
    "digits": (r"\(?([1-9])\)", ["1", "2"]),
    "roman": (r"\((i{1,3}|iv|v|vi)\)", ["i", "ii"]),
    "circled": (r"([①②③④⑤⑥])", ["①", "②"]),
    "uppercase_roman": (r"\(?(I{1,3}|IV|V|VI)\)", ["I", "II"]),
}
_STANDALONE = r"(?<![^\s.,;:，。；：])"  # start of text, or after whitespace/punctuation
# A part "asks" when it has a question mark or starts a sentence with an instruction verb.
_ASK = re.compile(
    r"\?|？|(?:^|[.;:!]\s+)\s*(?:find|determine|compute|calculate|evaluate|solve|simplify|prove|"
    r"show|express|write|list|give|state|sketch|explain|estimate)\b", re.IGNORECASE)


def multi_part(record: dict, min_asking_parts: int = 2) -> str | None:
    """The question has several parts, (a)/(b)… or (1)/(2)…, at least `min_asking_parts` of which
    ask something: one boxed answer cannot grade them all. Numbered *conditions* such as
    "(i) f(1) = 1, (ii) …" followed by a single question are kept."""
    text = record["problem"]
    for family, (marker, (first, second)) in _PART_FAMILIES.items():
        found = list(re.finditer(_STANDALONE + marker, text))
        labels = [m.group(1) for m in found]
        if first not in labels or second not in labels[labels.index(first) + 1:]:
            continue
        # the text of each part runs from the end of its marker to the start of the next one
        bounds = zip((m.end() for m in found), [m.start() for m in found[1:]] + [len(text)])
        asking = sum(bool(_ASK.search(text[a:b].strip())) for a, b in bounds)
        if asking >= min_asking_parts:
            return f"{asking} asking parts marked {family}"
    return None


FREE_TEXT_PATTERNS = (
    (r"^\s*(?:\\text\{)?\s*(?:proof|see (?:the )?(?:proof|solution|explanation|above|below)|"
     r"not ?found|omitted|q\.?e\.?d\.?|answer (?:may|can) vary|n/?a)\b"),
)


def free_text_answer(record: dict, max_words: int = 3,
                     patterns: tuple[str, ...] = FREE_TEXT_PATTERNS) -> str | None:
    """The gold is prose ("see proof", a sentence) rather than a value a verifier can compare."""
    answer = str(record.get("answer", ""))
    for p in patterns:
        if re.search(p, answer, flags=re.IGNORECASE):
            return "placeholder answer"
    plain = re.sub(r"\\[a-zA-Z]+", " ", answer)  # LaTeX commands are not words
    words = re.findall(r"[A-Za-z]{2,}", plain)
    if len(words) > max_words:
        return f"{len(words)} words of text"
    return None


_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@functools.lru_cache(maxsize=65536)
def _verifier_parses(answer: str) -> bool:
    # Datasets repeat answers ("2", "1/2", ...) and the verifier is the slow part of the
    # filter, so each distinct answer is parsed once; plain numbers always parse.
    from torl.reward import can_parse

    return bool(_PLAIN_NUMBER.fullmatch(answer)) or bool(can_parse(answer))


def unparseable_answer(record: dict) -> str | None:
    """The reward's verifier cannot parse the gold, so no response could ever be graded correct."""
    return None if _verifier_parses(str(record["answer"]).strip()) else "verifier cannot parse the gold"


# Order matters: cheap, specific rules first; the verifier call last (it is the slowest).
RULES: dict[str, Callable[..., str | None]] = {
    "missing_fields": missing_fields,
    "proof": proof,
    "multiple_choice": multiple_choice,
    "multi_part": multi_part,
    "free_text_answer": free_text_answer,
    "unparseable_answer": unparseable_answer,
}


def _bind_rules(rules: dict[str, dict] | None) -> list[tuple[str, Callable[[dict], str | None]]]:
    import inspect

    rules = rules or {}
    unknown = set(rules) - set(RULES)
    if unknown:
        raise DataError(f"unknown filter rule(s) {sorted(unknown)}; rules are {list(RULES)}")
    bound = []
    for name, fn in RULES.items():
        params = dict(rules.get(name) or {})
        if not params.pop("enabled", True):
            continue
        allowed = set(inspect.signature(fn).parameters) - {"record"}
        bad = set(params) - allowed
        if bad:
            raise DataError(f"filter rule {name!r} has no parameter(s) {sorted(bad)}; it takes {sorted(allowed)}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        bound.append((name, lambda r, fn=fn, params=params: fn(r, **params)))
    return bound


def _prefetch_parse(records: list[dict], threads: int = 4) -> None:
    """Fills the verifier cache for the distinct answers of `records` from a few threads: the
    verifier runs in worker processes, so concurrent calls overlap instead of queueing."""
    from concurrent.futures import ThreadPoolExecutor

    answers = {str(r["answer"]).strip() for r in records}
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_verifier_parses, sorted(answers)))  # re-raises a verifier failure


PREFETCH = {"unparseable_answer": _prefetch_parse}


def filter_records(records: list[dict], rules: dict[str, dict] | None = None) -> tuple[list[dict], StageReport]:
    """Applies the enabled rules in order; returns kept records and a report with per-rule counts
    and examples of what each rule removed. A row is counted under the first rule that fires."""
    start = time.perf_counter()
    bound = _bind_rules(rules)
    report = StageReport("filter", n_in=len(records), details={"rules": [n for n, _ in bound]})
    kept = records
    for name, rule in bound:  # rule by rule over the survivors: the same as first-match per row
        if name in PREFETCH:
            PREFETCH[name](kept)
        survivors = []
        for record in kept:
            reason = rule(record)
            if reason:
                report.remove(name, record, why=reason)
            else:
                survivors.append(record)
        kept = survivors
    return kept, report.finish(len(kept), time.perf_counter() - start)
