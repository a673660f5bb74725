"""Find the final answer in a model's output and decide whether it equals the gold answer.

Two modes. `grade(..., mode="lenient")` (evaluation, the default) reads answers the way people write them;
`mode="strict"` (an RL reward) accepts only a single `\\boxed{}` answer, and `format_ok` says whether one is there.
Both are built so that a policy cannot raise its score by hedging, and no output can exhaust memory or time.

Policy (each rule is pinned by a case in tests/evaluate/test_grading.py):
- The answer is the LAST one the model states: the last of `\\boxed{}`, `<answer>` tags, `####`, "final answer",
  "the answer is", "Answer:", "答案是/为/：", "答：", whichever comes last in the text; with none of these, the last
  number. Taking the first match scores "12 apples ... so 15" wrong in both directions. A marker followed by no
  answer ("The answer is correct.", "答案是否正确") or stating a hypothesis ("Suppose the answer is 12") is skipped; an
  answer taken back ("Wait, no", "Actually, it's 7", "I made an error", "scratch that", "不对") gives way to the last
  number after the retraction, and to no answer when none follows; working after the answer ("12 (since 3 x 4 =
  12)", "42 - the sum of ...") is not part of it.
- One answer only: an output that commits to several different final answers is wrong whichever the gold is. After
  the last revision cue ("wait", "let me recompute", "check again", "actually") every box and `<answer>` tag, and
  every marker followed by a plain number, must match the gold: `\\boxed{3} or \\boxed{5}` and "The answer is 3. The
  answer is 5." are wrong for 3 and for 5. An answer that names several values ("3 or 5", "3 \\lor 5",
  "1, 2, \\ldots, 100", a line break `\\\\`) is wrong unless the gold has the same form (math_verify accepts
  "1, 2, \\ldots, 100" for 100 and "3 \\lor 5" for 5).
- A negated answer is no answer: "The answer is not 5", "5 is not the answer", "it cannot be 5", "答案不是5".
- The last-number fallback skips exponents ("48 m^2" is 48), negated numbers, and numbers inside a stretch copied
  from the question (an output that restates the question states nothing); it keeps ratios and clock times whole
  ("3:4"); a bare list ("1 2 3 ... 100", "4, 6, 8") ends in no answer.
- Numbers compare by value: thousands separators, currency, units, trailing periods, `x =` and LaTeX wrappers are
  dropped; 1/2, \\frac{1}{2} and 0.5 are equal; a difference below one part in a million counts as rounding noise.
  Words that change a value are never dropped as units ("2 and a half", "3 x", "negative 3", "5 or six"); "3
  million", "3万", "20 percent", "百分之五十", "三分之二", "负五", "five" and "twenty-one" are read as the numbers they
  name.
- Percent: "50%" matches a gold of 50 or of 0.5 (the gold of a "what percent" question is usually 50, of a
  "what fraction" question 0.5; math_verify takes the same view). "0.33" does not match 1/3: the gold's precision binds.
- Text golds ("Yes", "Zoey is a knight") compare as normalised strings, never through sympy, which reads "Yes" as the
  product E*s*y and would accept "sey".
- Anything else goes to math_verify in a separate process that is killed after `timeout` seconds (default 5): sympy
  can hold the GIL for ever on `10^{10^{10}}`, so a thread cannot be interrupted; a timeout counts as wrong.
- Strict mode: the output must hold exactly one distinct non-empty box (the same box repeated is one), not taken
  back after it, and its content must verify against the gold; markers, tags and bare numbers do not count.
- Bounds: only the last MAX_EXAMINED_CHARS characters are read, an answer longer than MAX_ANSWER_CHARS or a number
  with more than MAX_DIGITS digits (beyond the gold's) is wrong unread, and every pattern is linear in its input
  (no nested or adjacent quantifiers over overlapping classes), so a 1 MB output grades in milliseconds.
"""

from __future__ import annotations

import atexit
import bisect
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
MODES = ("lenient", "strict")

# Answers live at the end of an output, and a looping model writes megabytes: extraction reads only the last
# MAX_EXAMINED_CHARS characters. 16,000 is about 4,000 tokens, four times eval's default max_new_tokens (1024); the
# longest output in docs/results is 2,700 characters. An answer stated before this window is not seen, so it can
# neither count nor hedge. The old whole-text scans took 18 GB on 60,000 "The answer is 3." lines.
MAX_EXAMINED_CHARS = 16_000
# How far past a marker its answer may run ("The answer is" and then a page is no answer); a slice of the whole rest
# per marker is what made many markers quadratic.
_MARKER_SPAN_CHARS = 2_000
# A longer final answer is not one (the longest gold in docs/results has 69 characters); verify() rejects it unread,
# which also bounds normalize and the verify cache (4,096 entries).
MAX_ANSWER_CHARS = 1_000
# A digit run longer than this and than any in the gold is wrong unread: sympy on '9' * 100_000 ran for over 100 s,
# and float() of such a number overflows.
MAX_DIGITS = 100
# More distinct final answers than this is a hedge without checking each: each check may cost a math_verify timeout.
_MAX_DISTINCT_ANSWERS = 4
# The final statements looked at (the last ones), and how many trailing numbers the fallback looks through for one
# that is neither negated nor quoted from the question.
_MAX_STATEMENTS = 64
_FALLBACK_LOOKBACK = 32


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
# "The answer is correct." / "I hope this answer is helpful" / "答案是正确的": a marker with no answer after it;
# "The final answer is not 5" / "... definitely not 5" rules 5 out rather than stating it.
_NOT_AN_ANSWER = re.compile(
    r"(?:(?:very|quite|also|not|definitely|indeed)\s+)?(?:correct|incorrect|right|wrong|helpful|clear|reasonable|"
    r"obvious|straightforward|as\s+follows|below|above|shown|given)\b|正确|错误|对的|错的|如下|合理"
    r"|(?:(?:definitely|certainly|clearly|surely|obviously)\s+)?(?:not|never)\b|不是",
    re.I,
)
# "Suppose the answer is 12, then ..." states no answer.
_HYPOTHETICAL = re.compile(r"(?:suppose|assum\w*|\bif|假设|如果)\s*(?:that\s+)?(?:the\s+)?(?:final\s+)?$", re.I)
# A stated answer taken back: the answer is the last number after this, or none.
_RETRACTION = re.compile(
    r"\bwait,?\s+no\b|\bno,?\s+wait\b|\bi\s+made\s+an?\s+(?:error|mistake)|\bi\s+was\s+wrong\b"
    r"|\bthat(?:'s|’s|\s+is|\s+was)\s+(?:wrong|incorrect|not\s+right)|\bcorrection\s*:|\bscratch\s+that\b"
    r"|\bon\s+second\s+thought\b|\bnever\s*mind\b"
    r"|\bactually,?\s+(?:no\b|it['’]s\b|it\s+(?:is|was|should\s+be)\b|i\s+was\s+wrong\b)"
    r"|不对|错了|更正",
    re.I,
)
# Where a model revises its work: answers stated before the last of these do not count as hedges of the final one
# ("We get \\boxed{3}. Wait, recomputing: \\boxed{5}." is 5).
_REVISION = re.compile(
    _RETRACTION.pattern
    + r"|\bwait\b|\bre-?(?:comput|calculat|check|do\b|doing|consider|examin|evaluat|think)|\bcheck(?:ing)?\s+again"
    r"|\blet\s+me\s+(?:re|double|check|verify|try)|\bmistake|\bactually\b|\binstead\b|\bcorrect(?:ed|ing)\b"
    r"|重新|再算|检查|等等",
    re.I,
)
# "The answer is not 5", "it cannot be 5", "答案不是5" (the 30 characters before a number), and "5 is not the answer"
# (the characters after it): the number is ruled out, not stated.
_NEGATED_BEFORE = re.compile(
    r"(?:\bnot|n['’]t|\bnever|\bcannot|不是|不等于|不可能是|不会是|并非)\s*(?:be\s+|equal\s+(?:to\s+)?|exactly\s+)?"
    r"(?:\$|\\\(|\\\[|\(|\\boxed\s*\{)?$",
    re.I,
)
_NEGATED_AFTER = re.compile(
    r"\s*(?:(?:is|was)(?:\s+not|n['’]t)\s+(?:the\s+)?(?:final\s+|correct\s+|right\s+)?(?:answer|solution|result)\b"
    r"|(?:is|was)\s+(?:wrong|incorrect)\b|(?:不是|并非)(?:正确的?)?答案)",
    re.I,
)
# What may separate the numbers of a bare list: "1 2 3", "4, 6, 8", "1, 2, ..., 100".
_LIST_GAP = re.compile(r"[\s,;、]*(?:(?:\.{3}|…|\\[lc]?dots)[\s,;、]*)?")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_ANSWER_OPEN = re.compile(r"<answer>", re.I)
_ANSWER_CLOSE = re.compile(r"</answer>", re.I)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BOX_SHORT = re.compile(r"[^\s$}]{1,64}")  # "\boxed 5"; bounded so "\boxed\boxed..." is not rescanned per box
_BLANK_LINES = re.compile(r"(?:[^\S\n]*\n)*")  # blank lines before a marker's block; one \n each: linear
_BLANK_LINE = re.compile(r"\n[^\S\n]*(?:\n|$)")
_SENTENCE_END = re.compile(
    r"[.!?](?=\s|$)|[。！？；;，（]|,\s+(?=[A-Za-z])(?![A-Za-z]\w*\s*=)|\s+(?:because|since|which|so)\s"
    r"|(?<=[\d%}])\s+\((?=[^)]*[A-Za-z]{2})"  # "12 (since 3 x 4 = 12)"
    r"|(?<=\d)\s+[-–—]\s+(?=[A-Za-z]{2}|[\u4e00-\u9fff])",  # "42 - the sum of 40 and 2"
    re.I,
)
_CN_DIGITS = dict(zip("零〇一二两三四五六七八九", (0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True))
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_CN_CHARS = "[零〇一二两三四五六七八九十百千万亿]"
_CN_NUMBER = re.compile(rf"^({_CN_CHARS}{{1,20}})([\u4e00-\u9fff]{{0,3}})$")  # 20: "万" * 1,100 has 4,400 digits


def _examined(text: str) -> str:
    """The end of `text` where answers live: its last MAX_EXAMINED_CHARS characters, cut at a space."""
    if len(text) <= MAX_EXAMINED_CHARS:
        return text
    start = len(text) - MAX_EXAMINED_CHARS
    space = text.find(" ", start, start + 64)  # not inside a number: "12345" cut to "345" would read as 345
    return text[space + 1 if space != -1 else start :]


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
    """(position, content) of every \\boxed{...} (nested braces kept) and \\boxed 5; an over-long one is no answer."""
    found, pairs = [], None
    for m in _BOXED.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            pairs = _brace_pairs(text) if pairs is None else pairs
            close = pairs.get(m.end())
            if close is not None and close - m.end() <= MAX_ANSWER_CHARS and not _negated_at(text, m.start()):
                found.append((m.start(), text[m.end() + 1 : close]))
        elif (short := _BOX_SHORT.match(text, m.end())) and short.end() - m.end() < 64:
            found.append((m.start(), short.group(0)))
    return found


def _tagged(text: str) -> list[tuple[int, str]]:
    """(position, content) of every <answer>...</answer>: each opening tag with the first closing one after it."""
    closes = [m.start() for m in _ANSWER_CLOSE.finditer(text)]
    found = []
    for m in _ANSWER_OPEN.finditer(text):  # a lazy "<answer>(.*?)</answer>" rescans the rest per unclosed tag
        i = bisect.bisect_left(closes, m.end())
        if i < len(closes) and closes[i] - m.end() <= MAX_ANSWER_CHARS:
            found.append((m.start(), text[m.end() : closes[i]]))
    return found


def _after_marker(text: str, end: int) -> str:
    """What follows a marker: the rest of its line, or the next block of lines when the line is empty (both cut at
    _MARKER_SPAN_CHARS)."""
    limit = min(len(text), end + _MARKER_SPAN_CHARS)
    line_end = text.find("\n", end, limit)
    rest = text[end : line_end if line_end != -1 else limit]
    if re.match(r"[\s*]*(?:[.。,，;；!?！？](?!\d))", rest):  # "This is the final answer." ends a sentence
        return ""
    if _strip_decoration(rest) or line_end == -1:
        return rest
    # The block runs to the next blank line; found by regex, not a Python loop over lines, as markers can be many.
    start = _BLANK_LINES.match(text, line_end + 1, limit).end()
    end = _BLANK_LINE.search(text, start, limit)
    return text[start : end.start() if end else limit].rstrip()


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
    end = len(s)  # one slice at the end: a slice per character is quadratic on "5" + "." * 100_000
    while end and s[end - 1] in chars and not (s[end - 1] == "!" and _is_factorial(s, end - 1, after_digit=True)):
        end -= 1
        while end and s[end - 1].isspace():
            end -= 1
    return s[:end]


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


def _final_candidates(text: str) -> list[tuple[int, str, str]]:
    """(position, raw text, kind) of every explicit final-answer statement in `text`; kind: box, tag or marker."""
    found = [(position, content, "box") for position, content in _boxed(text)]
    found += [(position, content, "tag") for position, content in _tagged(text)]
    for pattern in _MARKERS:
        for m in pattern.finditer(text):
            after = _after_marker(text, m.end())
            if _NOT_AN_ANSWER.match(_strip_decoration(after)) or _HYPOTHETICAL.search(text[max(0, m.start() - 30):
                                                                                             m.start()]):
                continue
            found.append((m.start(), after, "marker"))
    return sorted(found, key=lambda pc: pc[0])


def _stated(text: str, language: str, whole: bool) -> list[tuple[int, str, bool]]:
    """(position, answer, committed) of the last _MAX_STATEMENTS explicit statements with an answer. `whole` keeps a
    marker's text whole (reasoning-gym answers are sentences); committed: a box, a tag, or a marker followed by a
    plain number ("The answer is 3"), which a second, different one would contradict."""
    stated = []
    for position, raw, kind in _final_candidates(text)[-_MAX_STATEMENTS:]:
        answer = _strip_decoration(raw.replace("$", "")) if whole else _math_span(raw, kind == "box")
        if language == "zh" and answer:
            answer = _chinese_numeral(answer)
        if answer and len(answer) <= MAX_ANSWER_CHARS:
            stated.append((position, answer, kind != "marker" or _is_plain_number(answer)))
    return stated


def _is_plain_number(answer: str) -> bool:
    return len(answer) <= 64 and _number(normalize(answer)) is not None


def _negated_at(text: str, start: int) -> bool:
    """Whether what starts at `start` is ruled out by the words before it ("not \\boxed{5}", "答案不是5")."""
    return _NEGATED_BEFORE.search(text[max(0, start - 30) : start]) is not None


def _negated(text: str, m: re.Match) -> bool:
    return _negated_at(text, m.start()) or _NEGATED_AFTER.match(text, m.end(), m.end() + 60) is not None


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def _quoted(text: str, m: re.Match, question: str) -> bool:
    """Whether the number `m` and the 24 characters before it are copied from the (squashed) question."""
    context = _squash(text[max(0, m.start() - 24) : m.end()])
    return len(context) >= 16 and context in question


def _ends_list(text: str, numbers: list[re.Match], i: int) -> bool:
    """Whether numbers[i] ends a bare list of three or more numbers ("1 2 3 ... 100"): a list answers nothing."""
    if i < 2:
        return False
    for before, after in ((numbers[i - 1], numbers[i]), (numbers[i - 2], numbers[i - 1])):
        gap = text[before.end() : after.start()]
        if not gap or len(gap) > 16 or not _LIST_GAP.fullmatch(gap):
            return False
    return True


def _fallback_answer(text: str, question: str = "") -> str | None:
    """The last number that is neither negated nor quoted from `question`, unless it ends a bare list; with no number
    at all, a short output that is one worded number ("Five.")."""
    text = text.replace("\u2212", "-")
    numbers = list(_LAST_NUMBER.finditer(text))
    question = _squash(question)
    for i in range(len(numbers) - 1, max(-1, len(numbers) - 1 - _FALLBACK_LOOKBACK), -1):
        m = numbers[i]
        if _negated(text, m) or (question and _quoted(text, m, question)):
            continue
        return None if _ends_list(text, numbers, i) else m.group(0).strip()
    if not numbers and len(text) <= 64 and (worded := _strip_decoration(text)) and _worded_value(worded) is not None:
        return worded
    return None


def _distinct(answers: list[str]) -> list[str]:
    """`answers` without repeats of one value (by answer_key), each at its last place, so the final one is last."""
    by_key: dict[str, str] = {}
    for answer in answers:
        key = answer_key(answer) or answer
        by_key.pop(key, None)
        by_key[key] = answer
    return list(by_key.values())


def _final_answers(text: str, language: str, question: str, whole: bool, fallback: bool) -> list[str]:
    """The distinct answers `text` commits to, the final one last: the last statement and every committed statement
    since the last revision cue before it; the number after a retraction; else (`fallback`) the fallback number."""
    text = _examined(text)
    stated = _stated(text, language, whole)
    if not stated:
        found = _fallback_answer(text, question) if fallback else None
        return [_chinese_numeral(found) if language == "zh" else found] if found else []
    position, answer, _ = stated[-1]
    if retraction := _RETRACTION.search(text, position):  # "The answer is 12. Wait, no: ... so 16 apples."
        later = _fallback_answer(text[retraction.end() :], question)
        return [_chinese_numeral(later) if language == "zh" else later] if later else []
    revised_at = max((m.end() for m in _REVISION.finditer(text, 0, position)), default=0)
    return _distinct([a for p, a, committed in stated[:-1] if committed and p >= revised_at] + [answer])


def extract_answers(text: str, language: str = "en", question: str = "") -> list[str]:
    """Every distinct final answer a model committed to in `text`, the final one last; [] when it gave none. More
    than one is a hedge: lenient grading wants all of them right. `question` keeps a restated question from counting
    as an answer."""
    return _final_answers(text, language, question, whole=False, fallback=True)


def extract_answer(text: str, language: str = "en", question: str = "") -> str | None:
    """The final answer a model gave to a math question: the last stated one, else the last number."""
    answers = extract_answers(text, language, question)
    return answers[-1] if answers else None


def extract_final(text: str) -> str | None:
    """The last explicitly stated answer (boxed, tagged or after a marker), whole; None when there is none."""
    stated = _stated(_examined(text), "en", whole=True)
    return stated[-1][1] if stated else None


def last_number(text: str) -> str | None:
    """The last number in the examined end of `text` (negative, decimal, fraction, \\frac or percent), as written."""
    matches = list(_LAST_NUMBER.finditer(_examined(text).replace("\u2212", "-")))
    return matches[-1].group(0).strip() if matches else None


def strict_answer(text: str, language: str = "en") -> str | None:
    """The content of the single final box in `text`: None when there is no non-empty box, boxes with different
    answers (the same one repeated is one), or the box is taken back after it ("\\boxed{5}. Wait, no")."""
    text = _examined(text)
    boxes = [(position, answer) for position, raw in _boxed(text) if (answer := _math_span(raw, boxed=True))]
    if not boxes or _RETRACTION.search(text, boxes[-1][0]):
        return None
    keys: dict[str, str] = {}  # raw -> key: a box repeated a thousand times is normalised once
    for _, answer in boxes:
        if answer not in keys:
            keys[answer] = answer_key(answer) or answer
            if len(set(keys.values())) > 1:
                return None
    answer = boxes[-1][1]
    return _chinese_numeral(answer) if language == "zh" else answer


def format_ok(output: str) -> bool:
    """Whether `output` ends in the form strict grading wants: exactly one distinct final box, not taken back."""
    return strict_answer(output) is not None


def _chinese_numeral(s: str) -> str:
    """'十二' -> '12' (and '十二个' -> '12个', '负五' -> '-5', '三分之二' -> '2/3') so Chinese answers written in words
    compare as numbers."""
    s = s.strip()
    if any(ch.isdigit() for ch in s):
        return s
    sign = "-" if s.startswith("负") else ""
    s = s.removeprefix("负")
    if fraction := re.fullmatch(rf"({_CN_CHARS}{{1,20}})分之({_CN_CHARS}{{1,20}})", s):
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


_CHOICE_LETTER = rf"\(?\s*([{CHOICE_LETTERS}])"
# The letter must stand alone: "A." / "(A) 12" / "A, because" yes, "A train leaves" no. "(?:\s*\))?" rather than
# "\s*\)?": a \s* next to the \s+ of the lookahead is quadratic on "A" + spaces.
_CHOICE_ALONE = re.compile(
    _CHOICE_LETTER + r"(?:\s*\))?(?=$|[).:,;!。，、！]|\s+(?:[^A-Za-z\s]|(?:because|since|as|is)\b))"
)
# One \s* between required tokens each: three adjacent \s* took 120 s on "option" + 3,000 spaces.
_CHOICE_OPTION = re.compile(
    rf"(?:option|choice|选项|选择|选)\s*(?:(?:is|是)\s*)?(?:[:：]\s*)?(?:\(\s*)?([{CHOICE_LETTERS}])(?:\s*\))?"
    r"(?![A-Za-z])",
    re.I,
)
_CHOICE_LINE = re.compile(rf"^[^\w\n]*([{CHOICE_LETTERS}])[^\w\n]*$", re.M)  # a letter alone on its line: "**B**"


def _choice_in(content: str) -> str | None:
    content = _TEXT_CMD.sub(r"\1", _strip_decoration(content.replace("$", "")))
    m = _CHOICE_ALONE.match(content)
    return m.group(1) if m else None


def extract_choice(text: str) -> str | None:
    """The last multiple-choice letter the model committed to: boxed, after a marker, 'option B', or alone on a line."""
    text = _examined(text)
    found: list[tuple[int, str]] = []
    for pos, raw, _ in _final_candidates(text):
        if letter := _choice_in(raw):
            found.append((pos, letter))
    found += [(m.start(), m.group(1).upper()) for m in _CHOICE_OPTION.finditer(text)]
    found += [(m.start(), m.group(1)) for m in _CHOICE_LINE.finditer(text)]
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------------------------
# Normalisation and comparison

_UNIT_TAIL = re.compile(
    r"^(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?(?:\s*%)?)"  # "(?:\s*%)?": a bare \s* before \s+ is quadratic
    r"(\s+[A-Za-z](?:[A-Za-z .'/²³-]|\^\{?[23]\}?)*|\s*[\u4e00-\u9fff][^\d]*)$"
)
# Words after a number that change its value: never stripped as a unit ("2 and a half", "3 million", "3 x").
_VALUE_WORDS = set(
    "and half halves quarter quarters third thirds fourth fourths fifth fifths dozen dozens times point plus minus "
    "over squared cubed hundred hundreds thousand thousands million millions billion billions trillion "
    "or nor to of than more less fewer not".split()  # "5 or six", "5 to 7", "5 of the 12"
)
_UNIT_LETTERS = set("mgshlLKVWJNA")  # single-letter units; any other single letter is a variable ("3 x", "5 i")
_MULTIPLIERS = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12, "万": 10**4, "亿": 10**8}
# (?<![\d.]): start at a number's first digit only; from every digit of '9' * 10_000 it took 11 s.
_MULTIPLIED = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(thousand|million|billion|trillion|万|亿)(?![A-Za-z])", re.I)
# In a worded answer, words that change the one number in it: "negative 3" is not 3.
_CHANGES_VALUE = re.compile(
    r"\b(?:negative|minus|half|halves|quarters?|thirds?|dozens?|hundreds?|thousands?|millions?|billions?|times|"
    r"squared|cubed|point|not|never|or|either|than)\b|n['’]t\b|负|半|不是|或",
    re.I,
)
# "x = 4", "x_1 = 4", "a_{n} = 4"; not the "=" inside "\sum_{i=1}^n i^3" (which left "1}^n i^3", equal to 1)
# (a name's letters and each "_" subscript kept apart: "\w*" then "_\w+" is quadratic on "a_a_a_...")
_ASSIGNMENT = re.compile(
    r"^\\?[A-Za-z][A-Za-z0-9]*(?:_(?:\{\w+\}|[A-Za-z0-9]+))*\s*(?:=|\\approx|≈)\s*(?=\S)"
)
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
    s = re.sub(r"(?<!\s)\s*(?:percent|per\s+cent)\b", "%", s, flags=re.I)  # from a space run's start only
    s = re.sub(r"百分之\s*(\d+(?:\.\d+)?)", r"\1%", s)
    s = _words_to_digits(s)
    s = _MULTIPLIED.sub(_times, s)
    m = _UNIT_TAIL.match(s)
    if m and _is_unit(m.group(2)):  # "5 apples" -> 5, but "3 pi", "3 x" and "2 and a half" stay
        s = m.group(1).strip()
    return s


def _times(m: re.Match) -> str:
    """"3 million" -> "3000000"."""
    if len(m.group(1)) > MAX_DIGITS:  # float() of 10**400 overflows
        return m.group(0)
    value = Fraction(m.group(1)) * _MULTIPLIERS[m.group(2).lower()]
    return str(value.numerator) if value.denominator == 1 else str(float(value))


_EN_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen".split())}
_EN_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_EN_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9}
_EN_WORD = "|".join(sorted([*_EN_UNITS, *_EN_TENS, *_EN_SCALES], key=len, reverse=True))
# "five", "twenty-one", "one hundred and five", "negative three": a number in words at the start of an answer.
_WORDED = re.compile(rf"(negative\s+|minus\s+)?((?:{_EN_WORD})(?:(?:\s+and\s+|[\s-]+)(?:{_EN_WORD}))*)(?![\w-])", re.I)


def _worded_value(phrase: str) -> int | None:
    """The value of an English number phrase ("twenty-one" -> 21), None unless the whole phrase is one number
    ("five six" and "twenty twelve" are not)."""
    m = _WORDED.fullmatch(phrase.strip())
    if not m:
        return None
    total = current = 0
    last = ""  # the kind of the previous word: "unit" (0-19), "ten", "hundred" or "scale"
    for word in re.split(r"[\s-]+", m.group(2).lower()):
        if word == "and":
            continue
        if word in _EN_UNITS:
            if last == "unit" or (last == "ten" and _EN_UNITS[word] >= 10) or (word == "zero" and last):
                return None
            current, last = current + _EN_UNITS[word], "unit"
        elif word in _EN_TENS:
            if last in ("unit", "ten"):
                return None
            current, last = current + _EN_TENS[word], "ten"
        elif word == "hundred":
            if last != "unit" or current % 100 == 0:
                return None
            current, last = current * 100, "hundred"
        else:
            if not current or last == "scale":
                return None
            total, current, last = total + current * _EN_SCALES[word], 0, "scale"
    return total + current


def _words_to_digits(s: str) -> str:
    """An answer that starts with a number in words, alone or before a unit ("five", "twenty apples"), in digits."""
    m = _WORDED.match(s)
    if not m or (value := _worded_value(m.group(2))) is None:
        return s
    rest = s[m.end() :]
    if rest.strip() and not (re.fullmatch(r"\s+[A-Za-z][A-Za-z ]{0,40}", rest) and _is_unit(rest)):
        return s  # "one more than 4", "five or six"
    return f"{'-' if m.group(1) else ''}{value}{rest}"


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
    # Whitespace squashed first: "\s*" before a separator, tried from every space, is quadratic on a run of them.
    return re.sub(r" ?([,;:()\[\]]) ?", r"\1", re.sub(r"\s+", " ", s)).strip().lower()


# Alternatives, lists and line breaks let one answer name many values: math_verify accepts "1, 2, \\ldots, 100" for 100
# and "3 \\lor 5", "3 \\\\ 5" or "3 \\mid 5" for 5. Such a token in an answer but not in the gold makes it wrong.
_MANY_VALUES = re.compile(r"\\(?:[lcv]?dots|lor|vee|mid)(?![A-Za-z])|\.\.\.|…|\\\\|\\begin\{cases\}|\bor\b|\|")
_DIGIT_RUN = re.compile(r"\d+")


def _longest_digit_run(s: str) -> int:
    return max((m.end() - m.start() for m in _DIGIT_RUN.finditer(s)), default=0)


def verify(gold: str, predicted: str | None, timeout: float | None = None) -> bool:
    """Whether `predicted` is mathematically the same answer as `gold`, within `timeout` (default 5) seconds. An
    answer over MAX_ANSWER_CHARS, or with a digit run over MAX_DIGITS (and longer than the gold's), is wrong unread."""
    if predicted is None or not str(predicted).strip():
        return False
    gold, predicted = str(gold), str(predicted)
    if len(predicted) > max(MAX_ANSWER_CHARS, 2 * len(gold)):
        return False
    if _longest_digit_run(predicted) > max(MAX_DIGITS, _longest_digit_run(gold)):
        return False
    return _verify_cached(gold, predicted, VERIFY_TIMEOUT_S if timeout is None else timeout)


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
    if {m.group() for m in _MANY_VALUES.finditer(p)} - {m.group() for m in _MANY_VALUES.finditer(g)}:
        return False  # "3 or 5", "1, 2, ..., 100"
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
    if len(answer) > MAX_ANSWER_CHARS:  # not an answer verify() would read; keyed as written
        return answer.strip() or None
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


def _all_right(answers: list[str], right: Any) -> bool:
    """Whether there is an answer and every one is right (final first: a wrong one ends the checks); more than
    _MAX_DISTINCT_ANSWERS distinct answers are a hedge unchecked."""
    return 0 < len(answers) <= _MAX_DISTINCT_ANSWERS and all(right(a) for a in reversed(answers))


def _grade_math(output: str, item: Any, language: str, strict: bool) -> Verdict:
    golds = item.meta.get("golds") or [item.gold]  # champ lists every acceptable form of its answer
    if strict:
        answer = strict_answer(output, language)
        answers = [answer] if answer is not None else []
    else:
        answers = extract_answers(output, language, getattr(item, "question", ""))
    correct = _all_right(answers, lambda a: any(verify(str(g), a) for g in golds))
    return Verdict(answers[-1] if answers else None, correct, bool(answers))


def _grade_choice(output: str, item: Any, strict: bool) -> Verdict:
    if strict:
        boxed = strict_answer(output)
        letter = _choice_in(boxed) if boxed is not None else None
    else:
        letter = extract_choice(output)
    return Verdict(letter, letter is not None and letter == _choice_letter(str(item.gold)), letter is not None)


def _grade_rg(output: str, item: Any, strict: bool) -> Verdict:
    # reasoning-gym's literal checkers score "1,000" 0 against 1000, so an integer gold also gets our comparison;
    # not a fraction gold: the fractions task wants lowest terms, which value equality would not check.
    integer_gold = re.fullmatch(r"-?\d+", str(item.gold).strip()) is not None
    if strict:
        answer = strict_answer(output)
        answers = [answer] if answer is not None else []
    else:  # a reasoning-gym answer is a sentence: a marker's text is taken whole
        answers = _final_answers(output, "en", getattr(item, "question", ""), whole=True, fallback=integer_gold)
    if not answers:
        return Verdict(None, False, False)
    correct = _all_right(
        answers, lambda a: _rg_score(item, a) > RG_PASS_SCORE or (integer_gold and verify(str(item.gold), a))
    )
    return Verdict(answers[-1], correct, True)


def grade(output: str, item: Any, checker: str, language: str = "en", mode: str = "lenient") -> Verdict:
    """Extract the answer from one output and check it against `item.gold` with the benchmark's checker.

    mode "lenient" (evaluation) reads the answer as the module docstring says; "strict" (an RL reward) takes only the
    single final box (see `strict_answer`), so that a reward cannot be earned without one.
    """
    if mode not in MODES:
        raise ValueError(f"unknown grading mode '{mode}' (expected lenient or strict)")
    strict = mode == "strict"
    if checker == "math":
        return _grade_math(output, item, language, strict)
    if checker == "choice":
        return _grade_choice(output, item, strict)
    if checker == "rg":
        return _grade_rg(output, item, strict)
    raise ValueError(f"unknown checker '{checker}' (expected math, rg or choice)")
