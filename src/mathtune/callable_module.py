"""`mathtune.sft(...)` and `mathtune.evaluate(...)` are both public functions and names of modules. Importing a
submodule binds its name on the package, which would hide a function of the same name, so those two modules are
made callable instead: calling the module calls its entry function."""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, entry: str) -> None:
    """Calling the module `module_name` calls `entry` ("package.module.function"), imported on first call."""
    where, _, function = entry.rpartition(".")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(where), function)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
