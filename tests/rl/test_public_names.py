"""rl/ uses other modules only through their public names (read from the source, nothing imported to check it), and
the public functions it uses for generated rows behave as the rows say."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mathtune
from mathtune.errors import UserError

RL = Path(mathtune.__file__).parent / "rl"


def _private_uses(path: Path) -> list[str]:
    """`module._name` on a module imported from mathtune, and `from ..module import _name` outside rl itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            outside = node.level >= 2 or node.module is None
            for alias in node.names:
                modules.add(alias.asname or alias.name)  # may be a module (`from ..data import generators`)
                if outside and alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}: from {'.' * node.level}{node.module or ''} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules \
                and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"{path.name}: {node.value.id}.{node.attr}")
    return found


def test_rl_uses_no_private_name_of_another_module():
    found = [use for path in sorted(RL.glob("*.py")) for use in _private_uses(path)]
    assert found == []


def test_the_check_sees_private_uses(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from ..data import generators\nfrom ..sft import _evaluate\n"
                      "x = generators._TASKS\ny = generators.generate\n")
    assert _private_uses(sample) == ["sample.py: from ..sft import _evaluate", "sample.py: generators._TASKS"]


def test_train_entry_is_the_entry_behind_a_generated_row():
    from mathtune.data import generators

    rows = generators.generate("chain_sum", 3, seed=7)
    for row in rows:
        entry = generators.train_entry(row.origin, seed=7)
        user, reply = row.messages[0]["content"], row.messages[-1]["content"]
        assert entry["question"] in user
        assert f"\\boxed{{{generators.task_gold('chain_sum', entry)}}}" in reply
    assert generators.train_entry(rows[0].origin, seed=8)["question"] not in rows[0].messages[0]["content"]
    with pytest.raises(UserError, match="not the origin of a generated training row"):
        generators.train_entry("data.jsonl:3", seed=7)
