"""The text form that "same question" is judged on, shared by the contamination check and the generators' split keys.

Lowercased, NFKC-normalised, sentence punctuation removed (math punctuation kept), whitespace collapsed; split into
words, or single characters for CJK scripts, which have no spaces to split on. Not the grader's answer
normalisation (``mathtune.evaluate.grading.normalize``), which compares final answers, not question texts.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Punctuation that carries meaning in math (minus, division, brackets, powers...) is kept.
_KEEP = set("-/()[]{}*%#&@\\_")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


@lru_cache(maxsize=1)
def _punct_table() -> dict[int, str]:
    # Basic Multilingual Plane only: built once in ~20 ms, and str.translate then runs in C.
    return {cp: " " for cp in range(0x10000) if unicodedata.category(chr(cp)).startswith("P") and chr(cp) not in _KEEP}


def tokens(text: str) -> list[str]:
    """Normalised tokens: words, or single characters for CJK scripts."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower().translate(_punct_table()))


def match_text(text: str) -> str:
    """The normalised form used for exact matching and de-duplication of questions."""
    return " ".join(tokens(text))
