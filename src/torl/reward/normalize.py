"""Answer clean-up math-verify does not do, and the two answer kinds it should not see.

math-verify already handles fractions, `\\dfrac`, `\\sqrt`, degrees, percentages, most units,
intervals, sets, matrices and `x = 3`. What is added here:

- wrappers and nits: `$...$`, `\\(...\\)`, an outer `\\boxed{}`, a sentence's trailing period,
  `4.` / `-1./3` (a bare decimal point), thin spaces, `1{,}000`, `\\$` signs, number words;
- multiple-choice letters: when the gold is a letter (A-E, or a comma list of them) the
  prediction's leading choice letter is compared, so `\\textbf{(C)}\\ 12` matches `C`;
- plain-text answers (names, days, yes/no): math-verify would read `Evelyn` as the product
  E*e*l*n*v*y, which equals any anagram; text is compared as text instead.
"""

from __future__ import annotations

import decimal
import re

_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|emph|texttt)\s*\{([^{}]*)\}")
_OUTER_MATH = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
_THIN_SPACES = re.compile(r"\\[!,;: ]|~")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BARE_DECIMAL_POINT = re.compile(r"(\d)\.(?![\d.])")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d{1,3}")
_DIGIT_I = re.compile(r"(\d)i(?![A-Za-z])")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
# Short words that are answers, not products of variables (`no` is not n*o).
_ANSWER_WORDS = {"yes", "no", "true", "false", "odd", "even", "none", "neither", "both", "all", "never", "always"}
_CHOICE_LETTERS = "ABCDE"


def _unwrap_box(s: str) -> str:
    m = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", s, re.DOTALL)
    if m and _balanced(m.group(1)):
        return m.group(1).strip()
    return s


def _balanced(s: str) -> bool:
    depth = 0
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


def clean_answer(answer: str) -> str:
    """The answer without math delimiters, box, trailing period, thin spaces and similar nits."""
    s = answer.strip()
    for _ in range(3):  # wrappers can nest: $\boxed{...}$
        before = s
        for left, right in _OUTER_MATH:
            if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
                s = s[len(left):-len(right)].strip()
        s = _unwrap_box(s)
        s = s.rstrip(".").strip() if not s.endswith("..") else s
        if s == before:
            break
    s = _THIN_SPACES.sub(" ", s).replace("{,}", ",").replace("\\$", "").strip()
    s = re.sub(r"^\\(?:d|t)?frac", r"\\frac", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _BARE_DECIMAL_POINT.sub(r"\1", s)
    if _SCIENTIFIC.fullmatch(s):  # 1e2 -> 100 (LaTeX parsers read `e` as Euler's number)
        s = format(decimal.Decimal(s).normalize(), "f")
    s = s.replace("\\varnothing", "\\emptyset")
    # `2i` is an imaginary number; math-verify only treats `i` as imaginary when it stands alone.
    s = _DIGIT_I.sub(r"\1\\cdot i", s)
    word = s.lower()
    if word in _NUMBER_WORDS:
        s = _NUMBER_WORDS[word]
    return s


def _strip_text_commands(s: str) -> str:
    for _ in range(3):
        s = _TEXT_COMMANDS.sub(r"\1", s)
    return s


def choice_letters(answer: str) -> frozenset[str] | None:
    """The letters of a multiple-choice answer (`C`, `(C)`, `\\text{(B)}`, `A, C`), else None."""
    s = _strip_text_commands(answer).replace(" ", "")
    parts = s.split(",")
    letters = set()
    for part in parts:
        m = re.fullmatch(r"\(?([A-E])\)?", part)
        if not m:
            return None
        letters.add(m.group(1))
    return frozenset(letters) if letters else None


def predicted_choice_letters(answer: str) -> frozenset[str] | None:
    """Choice letters a prediction commits to: a full letter list, or a leading `(C)` / `C.` / `C)`."""
    exact = choice_letters(answer.upper() if len(answer.strip()) <= 3 else answer)
    if exact is not None:
        return exact
    s = _strip_text_commands(answer).strip()
    # The letter must stand alone: "(C) 12", "C. 12" commit to C; "(B)+1" is an expression.
    m = re.match(r"(?:\(([A-E])\)|([A-E])[.):])(?:\s|[.,;:]|$)", s)
    if m:
        return frozenset(m.group(1) or m.group(2))
    return None


def text_answer(answer: str) -> str | None:
    """Lower-cased words if the answer is plain text (a name, a day, yes/no), else None.

    Letters-only strings count as text when written with `\\text{}` or similar, when they hold
    a word of 4+ letters, or when they are a known answer word; short letter strings like
    `ab` or `xyz` stay math (a product of variables).
    """
    had_text_command = bool(_TEXT_COMMANDS.search(answer))
    s = _strip_text_commands(answer).strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z' \-]*", s):
        return None
    words = s.lower().split()
    if had_text_command and len(s.replace(" ", "")) >= 2:
        return " ".join(words)
    if any(len(w) >= 4 for w in words) or " ".join(words) in _ANSWER_WORDS:
        return " ".join(words)
    return None


def same_text(a: str, b: str) -> bool:
    """Plain-text answers compare case- and article-insensitively."""
    def canon(s: str) -> str:
        return re.sub(r"^(?:the|a|an) ", "", s.strip().lower())
    return canon(a) == canon(b)
