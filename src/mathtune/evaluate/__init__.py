"""Evaluation: benchmarks, answer extraction and verification, running and reports.

Calling this package (`mathtune.evaluate(...)`) calls runner.evaluate: see mathtune.callable_module.
"""

from ..callable_module import make_callable

make_callable(__name__, "mathtune.evaluate.runner.evaluate")
