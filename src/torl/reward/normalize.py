"""Answer clean-up math-verify does not do, and the two answer kinds it should not see.

math-verify already handles fractions, `\\dfrac`, `\\sqrt`, degrees, percentages, most units,
intervals, sets, matrices and `x = 3`. What is added here:

- wrappers and nits: math delimiters (`$...$`, `\\(...\\)`; an answer written as several spans,
  `$21,16$ or $11$`, keeps what they hold), an outer `\\boxed{}`, a sentence's trailing period,
  `4.` / `-1./3` (a bare decimal point), thin spaces, `1{,}000`, `\\$` signs, number words, a
  stray trailing backslash (`185\\`);
- LaTeX is read as tokens: `\\\\` (a row break) is one token, so `\\\\ 3` in a matrix is a row
  break before 3, never a thin space `\\ ` that would merge the rows;
- readings math-verify gets wrong: upright `\\mathrm{e}` / `\\mathrm{i}` are e and i (math-verify
  0.9 truncates `\\frac{1}{\\mathrm{e}}`); degrees inside a trig function are an angle
  (`\\sin(90^{\\circ}-x)` is `\\cos x`; elsewhere `45^\\circ` stays 45); scientific notation
  (`1e2`, `2.5 \\times 10^{-3}`) becomes a plain decimal; a mixed number `1 1/2` is `1\\frac{1}{2}`;
- multiple-choice letters: when the gold is a letter (A-E, or a comma list of them) the
  prediction's leading choice letter is compared, so `\\textbf{(C)}\\ 12` matches `C`;
- plain-text answers (names, days, yes/no): math-verify would read `Evelyn` as the product
  E*e*l*n*v*y, which equals any anagram; text is compared as text instead.
"""

from __future__ import annotations

import decimal
import re

_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|emph|texttt)\s*\{([^{}]*)\}")
# LaTeX tokens that matter to the clean-up, scanned left to right so an escape is read once:
# `\\` (row break) and `\$` (a dollar sign) are kept (group 1); a negative thin space `\!`
# goes with the spaces after it (`16,\! 386` is 16386: the usual thousands separator); math
# delimiters (a bare answer's carry no meaning) and thin spaces become spaces.
_LATEX_TOKEN = re.compile(r"(\\\\|\\\$)|(\\!\s*)|\$\$?|\\[()\[\]]|\\[,;: ]|~")
# Upright e and i are Euler's number and the imaginary unit (ISO 80000-2); other upright letters
# are units (`5\\,\\mathrm{m}`), left to math-verify's unit handling.
_UPRIGHT_CONSTANT = re.compile(r"\\(?:mathrm|textrm|text|rm|operatorname)\s*\{\s*([ei])\s*\}")
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?|(?<![\\A-Za-z])[A-Za-z])\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°)")
_TIMES_TEN = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{?\s*([+-]?\d{1,3})\s*\}?")
_MIXED_NUMBER = re.compile(r"(-?\d+)\s+(\d+)\s*/\s*(\d+)")
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")  # `0,111` is a decimal comma
_BARE_DECIMAL_POINT = re.compile(r"(\d)\.(?![\d.])")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d{1,3}")
_DIGIT_I = re.compile(r"(\d)i(?![A-Za-z])")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
            "eighteen", "nineteen", "twenty",
        ]
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


def _latex_token(m: re.Match) -> str:
    if m.group(2):
        return ""
    return m.group(1) or " "


def _plain_decimal(number: str) -> str:
    return format(decimal.Decimal(number).normalize(), "f")


def _degrees_as_angle(m: re.Match) -> str:
    return f"(\\frac{{{m.group(1)}\\pi}}{{180}})"


def _mixed_number(s: str) -> str:
    m = _MIXED_NUMBER.fullmatch(s)
    if m is None or int(m.group(2)) >= int(m.group(3)):  # `2 3/2` is not a mixed number
        return s
    return f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"  # math-verify: 1\frac{1}{2} is 3/2


def clean_answer(answer: str) -> str:
    """The answer without math delimiters, box, trailing period, thin spaces and similar nits."""
    s = _LATEX_TOKEN.sub(_latex_token, answer).strip()
    for _ in range(3):  # wrappers can nest: \boxed{...}.
        before = s
        s = _unwrap_box(s)
        s = s.rstrip(".").strip() if not s.endswith("..") else s
        s = s.rstrip("\\").strip()
        if s == before:
            break
    s = s.replace("{,}", ",").replace("\\$", "").strip()
    s = re.sub(r"^\\(?:d|t)?frac", r"\\frac", s)
    s = _UPRIGHT_CONSTANT.sub(r"\1", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _BARE_DECIMAL_POINT.sub(r"\1", s)
    if _SCIENTIFIC.fullmatch(s):  # 1e2 -> 100 (LaTeX parsers read `e` as Euler's number)
        s = _plain_decimal(s)
    times_ten = _TIMES_TEN.fullmatch(s)
    if times_ten:  # math-verify compares 2.5/10**3 with 1/400 symbolically and misses
        s = _plain_decimal("{}e{}".format(*times_ten.groups()))
    s = _mixed_number(s)
    if _TRIG.search(s):
        s = _DEGREES.sub(_degrees_as_angle, s)
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
