"""Fixtures shared by the GRPO tests."""

import json
from pathlib import Path

import pytest


@pytest.fixture
def questions(tmp_path) -> Path:
    """Eight sum questions whose gold answer is 7, as local rows with an `answer` column."""
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + {7 - a}?", "answer": "7"}) + "\n"
                            for a in range(8)))
    return path
