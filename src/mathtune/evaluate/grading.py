"""Find the final answer in a model's output and decide whether it equals the gold answer.

Policy (each rule is pinned by a case in tests/evaluate/test_grading.py):
- The answer is the LAST one the model states: the last of `\\boxed{}`, `<answer>` tags, `####`, "final answer",
  "the answer is", "Answer:", "答案是/为/：", "答：", whichever comes last in the text; with none of these, the last
  number. Taking the first match scores "12 apples ... so 15" wrong in both directions. A marker followed by no
  answer ("The answer is correct.", "答案是否正确") or stating a hypothesis ("Suppose the answer is 12") is skipped; an
  answer taken back ("Wait, no", "I made an error", "不对") gives way to the last number after the retraction;
  working after the answer ("12 (since 3 x 4 = 12)", "42 - the sum of ...") is not part of it.
- The last-number fallback skips exponents ("48 m^2" is 48) and keeps ratios and clock times whole ("3:4").
- Numbers compare by value: thousands separators, currency, units, trailing periods, `x =` and LaTeX wrappers are
  dropped; 1/2, \\frac{1}{2} and 0.5 are equal; a difference below one part in a million counts as rounding noise.
  Words that change a value are never dropped as units ("2 and a half", "3 x", "negative 3"); "3 million", "3万",
  "20 percent", "百分之五十", "三分之二" and "负五" are read as the numbers they name.
- Percent: "50%" matches a gold of 50 or of 0.5 (the gold of a "what percent" question is usually 50, of a
  "what fraction" question 0.5; math_verify takes the same view). "0.33" does not match 1/3: the gold's precision binds.
- Text golds ("Yes", "Zoey is a knight") compare as normalised strings, never through sympy, which reads "Yes" as the
  product E*s*y and would accept "sey".
- Anything else goes to math_verify in a separate process that is killed after `timeout` seconds (default 5): sympy
  can hold the GIL for ever on `10^{10^{10}}`, so a thread cannot be interrupted; a timeout counts as wrong.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

VERIFY_TIMEOUT_S = 5.0
# reasoning-gym gives partial credit (len(gold)/len(answer)) when the gold is a substring; only a full score passes.
RG_PASS_SCORE = 0.99
CHOICE_LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class Verdict:
    """The answer found in one output and whether it is right."""

    extracted: str | None
    correct: bool
    parsed: bool


# ---------------------------------------------------------------------------------------------------------------
# Extraction

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_LAST_NUMBER = re.compile(
    r"\\[dt]?frac\{[^{}]+\}\{[^{}]+\}"
    r"|(?<![\d:.])\d+:\d+(?![\d:])"  # a ratio or a clock time, whole: "3:4", "12:30"
    rf"|(?<![A-Za-z0-9_)\]}}^])-?(?:{_NUM})\s*/\s*(?:{_NUM})(?![\d/])"
    rf"|(?<![A-Za-z0-9_)\]}}.^])(?<!\^\{{)-?(?:{_NUM})(?:\s*\\?%)?"  # not an exponent: "48 m^2" is 48
)
_MARKERS = [
    re.compile(r"final\s+answer\s*(?:is|:|：|=)?", re.I),
    re.compile(r"\banswer\s*(?:is(?!n['’]t)\b|(?:would|should|must)\s+be|:|：|=)(?!\s*not\b)", re.I),
    re.compile(r"^[^\w\n]*answer[^\w\n]*$", re.I | re.M),  # "**Answer**" alone on its line, the value on the next
    re.compile(r"答案\s*(?:应该是|应为|是(?!否)|为|:|：)"),
    re.compile(r"^[^\S\n]*答[^\S\n]*[:：]", re.M),  # [^\S\n]: a \s that spans lines makes this quadratic
    re.compile(r"####"),
]
# "The answer is correct." / "I hope this answer is helpful" / "答案是正确的": a marker with no answer after it.
_NOT_AN_ANSWER = re.compile(
    r"(?:(?:very|quite|also|not|definitely|indeed)\s+)?(?:correct|incorrect|right|wrong|helpful|clear|reasonable|"
    r"obvious|straightforward|as\s+follows|below|above|shown|given)\b|正确|错误|对的|错的|如下|合理",
    re.I,
)
# "Suppose the answer is 12, then ..." states no answer.
_HYPOTHETICAL = re.compile(r"(?:suppose|assum\w*|\bif|假设|如果)\s*(?:that\s+)?(?:the\s+)?(?:final\s+)?$", re.I)
# A stated answer taken back: the answer is the last number after this.
_RETRACTION = re.compile(
    r"\bwait,?\s+no\b|\bi\s+made\s+an?\s+(?:error|mistake)|\bthat(?:'s|\s+is)\s+(?:wrong|incorrect|not\s+right)"
    r"|\bcorrection\s*:|不对|错了|更正",
    re.I,
)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_SENTENCE_END = re.compile(
    r"[.!?](?=\s|$)|[。！？；;，（]|,\s+(?=[A-Za-z])(?![A-Za-z]\w*\s*=)|\s+(?:because|since|which|so)\s"
    r"|(?<=[\d%}])\s+\((?=[^)]*[A-Za-z]{2})"  # "12 (since 3 x 4 = 12)"
    r"|(?<=\d)\s+[-–—]\s+(?=[A-Za-z]{2}|[\u4e00-\u9fff])",  # "42 - the sum of 40 and 2"
    re.I,
)
_CN_DIGITS = dict(zip("零〇一二两三四五六七八九", (0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True))
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_CN_CHARS = "[零〇一二两三四五六七八九十百千万亿]"
_CN_NUMBER = re.compile(rf"^({_CN_CHARS}+)([\u4e00-\u9fff]{{0,3}})$")


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of the matching "}" for every "{" that closes, in one pass (a rescan per brace is quadratic)."""
    pairs, opened = {}, []
    for i, ch in enumerate(text):
        if ch == "{":
            opened.append(i)
        elif ch == "}" and opened:
            pairs[opened.pop()] = i
    return pairs


def _boxed(text: str) -> list[tuple[int, str]]:
    """(position, content) of every \\boxed{...} (nested braces kept) and \\boxed 5."""
    found, pairs = [], None
    for m in _BOXED.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            pairs = _brace_pairs(text) if pairs is None else pairs
            if m.end() in pairs:
                found.append((m.start(), text[m.end() + 1 : pairs[m.end()]]))
        elif short := re.match(r"[^\s$}]+", text[m.end() :]):
            found.append((m.start(), short.group(0)))
    return found


def _after_marker(text: str, end: int) -> str:
    """What follows a marker: the rest of its line, or the next block of lines when the line is empty."""
    line_end = text.find("\n", end)
    rest = text[end : line_end if line_end != -1 else len(text)]
    if re.match(r"[\s*]*(?:[.。,，;；!?！？](?!\d))", rest):  # "This is the final answer." ends a sentence
        return ""
    if _strip_decoration(rest):
        return rest
    block = []
    for line in text[line_end + 1 :].splitlines() if line_end != -1 else []:
        if not line.strip():
            if block:
                break
            continue
        block.append(line)
    return "\n".join(block)


def _is_factorial(s: str, i: int, after_digit: bool) -> bool:
    """Whether the "!" at s[i] reads as a factorial: after ")", "}", "]", a lone letter ("n!"), a number that follows
    an operator ("/4!"), or (`after_digit`) any number. After a bare number in running text it is an exclamation:
    "The answer is 42!"."""
    before = s[i - 1] if i else ""
    if before in ")}]":
        return True
    if before.isdigit():
        start = i - 1
        while start > 0 and s[start - 1].isdigit():
            start -= 1
        return after_digit or (start > 0 and s[start - 1] in "/*×·^(")
    return before.isascii() and before.isalpha() and not (i > 1 and s[i - 2].isalpha())


def _strip_trailing(s: str, chars: str = " .。!！,，;；") -> str:
    """`s` without trailing punctuation from `chars`, keeping a factorial's "!" ("n!", "(n-1)!", "5!")."""
    s = s.strip()
    while s and s[-1] in chars and not (s[-1] == "!" and _is_factorial(s, len(s) - 1, after_digit=True)):
        s = s[:-1].rstrip()
    return s


def _strip_decoration(s: str) -> str:
    """Drop markdown emphasis, a leading colon or 'is', and trailing sentence punctuation."""
    s = s.replace("**", "").replace("__", "").strip()
    s = re.sub(r"^(?:[:：=]|is\b)\s*", "", s, flags=re.I).strip()
    return _strip_trailing(s)


def _sentence_end(s: str) -> re.Match | None:
    """The first sentence end in `s` outside parentheses ("(x=8, y=2)"); a factorial's "!" is none."""
    depth, seen = 0, 0
    for m in _SENTENCE_END.finditer(s):
        depth += s.count("(", seen, m.start()) - s.count(")", seen, m.start())
        seen = m.start()
        if depth <= 0 and not (m.group() == "!" and _is_factorial(s, m.start(), after_digit=False)):
            return m
    return None


def _math_span(s: str, boxed: bool = False) -> str:
    """The answer at the start of a marker's text: a whole $...$ / \\(...\\) group, else text up to the sentence end.
    A box's content is the answer whole ("\\boxed{x=6, y=5}")."""
    s = _strip_decoration(s)
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left):
            close = s.find(right, len(left))
            if close != -1:
                return s[len(left) : close].strip()
    cut = None if boxed else _sentence_end(s)
    return _strip_decoration((s[: cut.start()] if cut else s).strip("$"))


def _final_candidates(text: str) -> list[tuple[int, str, bool]]:
    """(position, raw text, whether boxed) of every explicit final-answer statement in `text`."""
    found = [(position, content, True) for position, content in _boxed(text)]
    found += [(m.start(), m.group(1), False) for m in _ANSWER_TAG.finditer(text)]
    for pattern in _MARKERS:
        for m in pattern.finditer(text):
            after = _after_marker(text, m.end())
            if _NOT_AN_ANSWER.match(_strip_decoration(after)) or _HYPOTHETICAL.search(text[max(0, m.start() - 30):
                                                                                             m.start()]):
                continue
            found.append((m.start(), after, False))
    return sorted(found, key=lambda pc: pc[0])


def extract_final(text: str) -> str | None:
    """The last explicitly stated answer (boxed, tagged or after a marker), whole; None when there is none."""
    for _, raw, _ in reversed(_final_candidates(text)):
        if cleaned := _strip_decoration(raw.replace("$", "")):
            return cleaned
    return None


def last_number(text: str) -> str | None:
    """The last number in `text` (negative, decimal, fraction, \\frac or percent), as written."""
    matches = list(_LAST_NUMBER.finditer(text.replace("\u2212", "-")))
    return matches[-1].group(0).strip() if matches else None


def extract_answer(text: str, language: str = "en") -> str | None:
    """The final answer a model gave to a math question: the last stated one, else the last number."""
    answer = None
    for position, raw, boxed in reversed(_final_candidates(text)):
        if answer := _math_span(raw, boxed):
            if (taken_back := _RETRACTION.search(text, position)) and (later := last_number(text[taken_back.end():])):
                answer = later  # "The answer is 12. Wait, no: ... so 16 apples."
            break
    answer = answer or last_number(text)
    if answer and language == "zh":
        answer = _chinese_numeral(answer)
    return answer


def _chinese_numeral(s: str) -> str:
    """'十二' -> '12' (and '十二个' -> '12个', '负五' -> '-5', '三分之二' -> '2/3') so Chinese answers written in words
    compare as numbers."""
    s = s.strip()
    if any(ch.isdigit() for ch in s):
        return s
    sign = "-" if s.startswith("负") else ""
    s = s.removeprefix("负")
    if fraction := re.fullmatch(rf"({_CN_CHARS}+)分之({_CN_CHARS}+)", s):
        part, whole = _cn_int(fraction.group(2)), fraction.group(1)
        return f"{sign}{part}%" if whole == "百" else f"{sign}{part}/{_cn_int(whole)}"
    m = _CN_NUMBER.match(s)
    return f"{sign}{_cn_int(m.group(1))}{m.group(2)}" if m else sign + s


def _cn_int(numeral: str) -> int:
    total = section = digit = 0
    for ch in numeral:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif _CN_UNITS[ch] >= 10_000:
            total = (total + section + digit) * _CN_UNITS[ch]
            section = digit = 0
        else:
            section += (digit or 1) * _CN_UNITS[ch]
            digit = 0
    return total + section + digit


def extract_choice(text: str) -> str | None:
    """The last multiple-choice letter the model committed to: boxed, after a marker, 'option B', or alone on a line."""
    letter = rf"\(?\s*([{CHOICE_LETTERS}])\s*\)?"
    # The letter must stand alone: "A." / "(A) 12" / "A, because" yes, "A train leaves" no.
    after = r"(?=$|[).:,;!。，、！]|\s+(?:[^A-Za-z\s]|(?:because|since|as|is)\b))"
    found: list[tuple[int, str]] = []
    for pos, raw, _ in _final_candidates(text):
        content = _TEXT_CMD.sub(r"\1", _strip_decoration(raw.replace("$", "")))
        if m := re.match(letter + after, content):
            found.append((pos, m.group(1)))
    option = rf"(?:option|choice|选项|选择|选)\s*(?:is\s*|是\s*)?[:：]?\s*{letter}(?![A-Za-z])"
    found += [(m.start(), m.group(1).upper()) for m in re.finditer(option, text, re.I)]
    alone = rf"^\W*{letter}\W*$"
    found += [(m.start(), m.group(1)) for m in re.finditer(alone, text, re.M)]
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and comparison

_UNIT_TAIL = re.compile(
    r"^(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?\s*%?)"
    r"(\s+[A-Za-z](?:[A-Za-z .'/²³-]|\^\{?[23]\}?)*|\s*[\u4e00-\u9fff][^\d]*)$"
)
# Words after a number that change its value: never stripped as a unit ("2 and a half", "3 million", "3 x").
_VALUE_WORDS = set(
    "and half halves quarter quarters third thirds fourth fourths fifth fifths dozen dozens times point plus minus "
    "over squared cubed hundred hundreds thousand thousands million millions billion billions trillion".split()
)
_UNIT_LETTERS = set("mgshlLKVWJNA")  # single-letter units; any other single letter is a variable ("3 x", "5 i")
_MULTIPLIERS = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "万": 10**4, "亿": 10**8}
_MULTIPLIED = re.compile(r"(\d+(?:\.\d+)?)\s*(thousand|million|billion|trillion|万|亿)(?![A-Za-z])", re.I)
# In a worded answer, words that change the one number in it: "negative 3" is not 3.
_CHANGES_VALUE = re.compile(
    r"\b(?:negative|minus|half|halves|quarters?|thirds?|dozens?|hundreds?|thousands?|millions?|billions?|times|"
    r"squared|cubed|point)\b|负|半",
    re.I,
)
# "x = 4", "x_1 = 4", "a_{n} = 4"; not the "=" inside "\sum_{i=1}^n i^3" (which left "1}^n i^3", equal to 1)
_ASSIGNMENT = re.compile(r"^\\?[A-Za-z]\w*(?:_(?:\{\w+\}|\w+))?\s*(?:=|\\approx|≈)\s*(?=\S)")
_MATH_WORDS = set(
    "sqrt frac dfrac tfrac pi sin cos tan cot sec csc log ln exp infty inf cdot times div pm mp le ge leq geq cup "
    "cap left right circ arcsin arccos arctan binom min max mod gcd lcm det".split()
)
_FULLWIDTH = str.maketrans("０１２３４５６７８９－．％，：（）", "0123456789-.%,:()")


def normalize(s: str) -> str:
    """A canonical spelling of an answer: no LaTeX wrappers, units, currency, thousands separators or 'x ='."""
    s = s.translate(_FULLWIDTH).replace("\u2212", "-").strip()
    for _ in range(3):  # nested \text{\textbf{...}}
        s = _TEXT_CMD.sub(r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:| )", "", s).replace("{,}", ",")
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%")
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = re.sub(r"^(?:US\s*)?[€£¥￥]|^USD\s*|^RMB\s*", "", s).strip()
    s = _strip_trailing(s.replace("**", ""), " .。!！,，;；:")
    if _ASSIGNMENT.match(s) and s.count("=") <= 1:
        s = _ASSIGNMENT.sub("", s).strip()
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\s*(?:percent|per\s+cent)\b", "%", s, flags=re.I)
    s = re.sub(r"百分之\s*(\d+(?:\.\d+)?)", r"\1%", s)
    s = _MULTIPLIED.sub(lambda m: _times(m.group(1), _MULTIPLIERS[m.group(2).lower()]), s)
    m = _UNIT_TAIL.match(s)
    if m and _is_unit(m.group(2)):  # "5 apples" -> 5, but "3 pi", "3 x" and "2 and a half" stay
        s = m.group(1).strip()
    return s


def _times(number: str, factor: int) -> str:
    value = Fraction(number) * factor
    return str(value.numerator) if value.denominator == 1 else str(float(value))


def _is_unit(tail: str) -> bool:
    words = tail.split()
    if not words or re.match(r"[\u4e00-\u9fff]", words[0]):
        return True
    first = words[0].lower()
    if len(words[0]) == 1:
        return words[0] in _UNIT_LETTERS
    return first not in _MATH_WORDS and first not in _VALUE_WORDS


def _number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_percent) when `s` is a plain number (integer, decimal, a/b, \\frac{a}{b}, percent), else None."""
    s = s.replace(" ", "")
    percent = s.endswith("%")
    s = s.rstrip("%")
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    m = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}|(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", s)
    try:
        if m:
            num, den = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            value = Fraction(num) / Fraction(den)
        elif re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", s):
            value = Fraction(s)
        else:
            return None
    except (ValueError, ZeroDivisionError):  # a 5,000-digit string or a zero denominator
        return None
    return sign * value, percent


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= Fraction(1, 10**6) * max(1, abs(a), abs(b))


def _numbers_equal(gold: tuple[Fraction, bool], pred: tuple[Fraction, bool]) -> bool:
    (g, g_pct), (p, p_pct) = gold, pred
    if g_pct == p_pct:
        return _close(g, p)
    pct, plain = (g, p) if g_pct else (p, g)
    return _close(plain, pct) or _close(plain, pct / 100)


def _is_text(s: str) -> bool:
    """True for a worded answer ('Yes', 'Zoey is a knight'): words that are not LaTeX commands or function names."""
    words = re.findall(r"(?<![\\A-Za-z])[A-Za-z]{2,}|[\u4e00-\u9fff]", s)
    return any(w.lower() not in _MATH_WORDS for w in words)


def _text_key(s: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\s*([,;:()\[\]])\s*", r"\1", s)).strip().lower()


def verify(gold: str, predicted: str | None, timeout: float | None = None) -> bool:
    """Whether `predicted` is mathematically the same answer as `gold`, within `timeout` (default 5) seconds."""
    if predicted is None or not str(predicted).strip():
        return False
    return _verify_cached(str(gold), str(predicted), VERIFY_TIMEOUT_S if timeout is None else timeout)


@lru_cache(maxsize=4096)
def _verify_cached(gold: str, predicted: str, timeout: float) -> bool:
    g, p = normalize(gold), normalize(predicted)
    if not g or not p:
        return False
    if _text_key(g) == _text_key(p):
        return True
    if (letter := re.fullmatch(r"\(?([A-H])\)?", g)) and re.match(rf"\({letter[1]}\)|{letter[1]}(?:[:.)]|$)", p):
        return True  # gold "(C)", the model wrote "(C) 12"
    g_num, p_num = _number(g), _number(p)
    if g_num and p_num:
        return _numbers_equal(g_num, p_num)
    if g_num and _is_text(p):
        # "小明有12个苹果" / "there are 12 apples": one number among words is the answer; several are a hedge.
        numbers = [n for n in (_number(normalize(x)) for x in _LAST_NUMBER.findall(p)) if n]
        return len(numbers) == 1 and not _CHANGES_VALUE.search(p) and _numbers_equal(g_num, numbers[0])
    if _is_text(g):
        return False
    return _WORKER.equal(g, p, timeout)


# ---------------------------------------------------------------------------------------------------------------
# math_verify in a killable process


def _math_verify_equal(gold: str, predicted: str) -> bool:
    from math_verify import parse
    from math_verify import verify as mv_verify

    g = parse(f"${gold}$", parsing_timeout=None)
    p = parse(f"${predicted}$", parsing_timeout=None)
    return bool(g and p and mv_verify(g, p, timeout_seconds=None))


def serve_stdio() -> None:
    """Worker loop: read JSON [gold, predicted] lines on stdin, answer 1 or 0 per line on stdout."""
    logging.disable(logging.WARNING)  # math_verify warns that its own timeout is off: ours replaces it
    import math_verify  # noqa: F401 - import before saying ready, so a timeout measures work, not the import

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            gold, predicted = json.loads(line)
            answer = _math_verify_equal(gold, predicted)
        except Exception:  # noqa: BLE001 - an expression sympy cannot handle is simply not equal
            answer = False
        print(int(answer), flush=True)


class _Worker:
    """One long-lived math_verify process; killed and restarted when an expression runs past the timeout.

    A plain subprocess rather than multiprocessing: spawn re-runs the caller's unguarded main script, and fork
    would copy the torch/CUDA threads of the parent in a broken state.
    """

    STARTUP_TIMEOUT_S = 120.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
        src = str(Path(__file__).resolve().parents[2])  # so the child finds this package however it was imported
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        code = "from mathtune.evaluate.grading import serve_stdio; serve_stdio()"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="ascii",
            env=env,
        )
        self._lines = queue.Queue()
        # A reader thread turns the blocking pipe into a queue we can wait on with a timeout, on every platform.
        threading.Thread(target=self._read, args=(self._proc.stdout, self._lines), daemon=True).start()
        if self._next_line(self.STARTUP_TIMEOUT_S) != "ready":
            self.stop()
            raise RuntimeError("the math_verify worker process did not start")

    @staticmethod
    def _read(stream: Any, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line.strip())
        lines.put(None)

    def _next_line(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream:
                    stream.close()
        self._proc = None

    def equal(self, gold: str, predicted: str, timeout: float) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.stop()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps([gold, predicted]) + "\n")
                self._proc.stdin.flush()
            except OSError:  # the worker died (out of memory): count as wrong, restart next time
                self.stop()
                return False
            line = self._next_line(timeout)
            if line in ("0", "1"):
                return line == "1"
            self.stop()  # past the timeout, or dead: kill it, the next call starts a fresh one
            return False


_WORKER = _Worker()
atexit.register(_WORKER.stop)


# ---------------------------------------------------------------------------------------------------------------
# Grading one output


def answer_key(answer: str | None) -> str | None:
    """A key under which equal answers group for majority voting: '1,000', '1000.0' and '$1000' share one."""
    if answer is None:
        return None
    norm = normalize(answer)
    number = _number(norm)
    if number is not None:
        return f"{number[0]}{'%' if number[1] else ''}"
    return _text_key(norm) or None


def _choice_letter(gold: str) -> str:
    m = re.search(rf"[{CHOICE_LETTERS}]", gold.upper())
    return m.group(0) if m else gold.strip().upper()


def _rg_score(item: Any, answer: str) -> float:
    from .benchmarks import rg_score

    return float(rg_score(item, answer))


def grade(output: str, item: Any, checker: str, language: str = "en") -> Verdict:
    """Extract the answer from one output and check it against `item.gold` with the benchmark's checker."""
    if checker == "math":
        answer = extract_answer(output, language)
        golds = item.meta.get("golds") or [item.gold]  # champ lists every acceptable form of its answer
        return Verdict(answer, any(verify(str(g), answer) for g in golds), answer is not None)
    if checker == "choice":
        letter = extract_choice(output)
        return Verdict(letter, letter is not None and letter == _choice_letter(str(item.gold)), letter is not None)
    if checker == "rg":
        # reasoning-gym's literal checkers score "1,000" 0 against 1000, so an integer gold also gets our comparison;
        # not a fraction gold: the fractions task wants lowest terms, which value equality would not check.
        integer_gold = re.fullmatch(r"-?\d+", str(item.gold).strip()) is not None
        answer = extract_final(output)
        if answer is None and integer_gold:
            answer = last_number(output)
        if answer is None:
            return Verdict(None, False, False)
        correct = _rg_score(item, answer) > RG_PASS_SCORE or (integer_gold and verify(str(item.gold), answer))
        return Verdict(answer, correct, True)
    raise ValueError(f"unknown checker '{checker}' (expected math, rg or choice)")
