"""mathtune: make a chat LLM measurably better at math and logic."""

__version__ = "0.1.0"
