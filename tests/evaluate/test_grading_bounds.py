"""Grading is about to be an RL reward: no output may exhaust its memory or time.

Each degenerate output is 1 MB (a looping model writes that much) and is graded in a child process under an address
space limit, so a quadratic scan fails the test by running out of memory instead of taking the machine down (the old
extraction was killed at 18 GB on 60,000 "The answer is 3." lines).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mathtune.evaluate.grading import normalize, verify

SIZE = 1_000_000
MEMORY_LIMIT = 768 * 2**20  # the interpreter takes ~30 MB; linear work on 1 MB stays far below this
TIME_LIMIT_S = 0.5  # per call; measured 0.002-0.1 s (30 MB peak) on a shared 2-core machine

# Every kind of answer marker, and the inputs that made a pattern backtrack, repeated up to 1 MB.
REPEATED = [
    "The answer is 3. ",
    "The final answer is 3.\n",
    "#### 3\n",
    "Answer: 3\n",
    "**Answer**\n3\n",
    "答：3\n",
    "答案是3。",
    "\\boxed{3} ",
    "\\boxed 3 ",
    "\\boxed",
    "<answer>3</answer>",
    "<answer>",
    "\\boxed{",
    "(",
    "The answer is (3 ",
    "option B ",
    "option",
    "option" + " " * 1_000,  # three adjacent \\s* took 120 s on one "option" and 3,000 spaces
    " ",
    "\n",
    "9",
    "1, ",
    "a_",
    "万",
    "5.",
    "Wait, no. ",
    "not ",
]

_CHILD = """
import json, resource, sys, time, types
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from mathtune.evaluate import grading
grading.verify("2^{{3}}", "8")  # start the math_verify worker first: its start-up is not grading time
item = types.SimpleNamespace(gold="3", question="q", meta={{}})
slowest = {{}}
for unit in json.loads(sys.stdin.read()):
    text = (unit * ({size} // len(unit) + 1))[:{size}]
    calls = [
        lambda: grading.extract_answer(text), lambda: grading.extract_answer(text, "zh"),
        lambda: grading.extract_choice(text), lambda: grading.format_ok(text), lambda: grading.verify("3", text),
        lambda: grading.answer_key(text),
    ]
    for mode in grading.MODES:
        calls += [lambda m=mode, c=checker: grading.grade(text, item, c, mode=m) for checker in ("math", "choice")]
    seconds = []
    for call in calls:
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    slowest[unit] = max(seconds)
print(json.dumps(slowest))
"""


def test_a_megabyte_output_of_every_marker_grades_fast_in_bounded_memory():
    child = _CHILD.format(limit=MEMORY_LIMIT, size=SIZE)
    done = subprocess.run([sys.executable, "-c", child], input=json.dumps(REPEATED), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # a MemoryError under the limit fails here
    slowest = json.loads(done.stdout)  # the slowest grading call per output
    assert {unit: s for unit, s in slowest.items() if s >= TIME_LIMIT_S} == {}
    assert len(slowest) == len(REPEATED)


@pytest.mark.parametrize("digits", [10_000, 100_000])
def test_a_long_digit_string_is_wrong_at_once(digits):
    started = time.perf_counter()
    assert not verify("5", "9" * digits)  # took 11 s for 10,000 digits and over 100 s for 100,000
    assert not verify("5", "9" * digits + " million")
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize("text", [
    "9" * 100_000 + " million",  # from every digit, the multiplier pattern rescanned the rest
    "a_" * 50_000 + "= 3",  # the name and its subscripts overlapped
    "5" + " " * 50_000 + "a" * 50_000 + "1",  # two whitespace runs next to each other
    " " * 100_000 + "x",  # "\s*percent" from every space
    "5" + "." * 100_000,  # trailing punctuation cut one slice at a time
])
def test_normalize_is_linear(text):
    started = time.perf_counter()
    normalize(text)
    assert time.perf_counter() - started < 0.5


def test_answers_that_name_huge_numbers_stay_bounded():
    assert not verify("5", "1" + "0" * 400 + ".5 million")  # float() of this overflowed inside normalize
    assert normalize("1" + "0" * 400 + ".5 million").endswith("million")  # too long to multiply out: kept as written
    assert verify("9" * 150, "9" * 150)  # a gold with a long number may still be matched
