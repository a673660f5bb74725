"""Benchmarks, grading, running and reporting evaluations.

`mathtune.evaluate(...)` is the public entry point (runner.evaluate). Once any module of this package has been
imported, Python binds the name `mathtune.evaluate` to the package itself, so the package is made callable: calling
it is calling runner.evaluate, whichever of the two the name resolves to.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .runner import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
