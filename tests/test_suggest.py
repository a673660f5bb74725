"""'Did you mean' for mistyped dataset, task and benchmark names."""

import pytest

from mathtune.data.sources import load_source, parse_spec, source_kind
from mathtune.errors import UserError
from mathtune.evaluate.benchmarks import get_benchmark
from mathtune.suggest import close_names, did_you_mean


def test_close_names_compare_without_org_and_case():
    known = {"AI-ModelScope/blossom-math-v2": "AI-ModelScope/blossom-math-v2", "gsm8k": "gsm8k"}
    assert close_names("blossom-math", known) == ["AI-ModelScope/blossom-math-v2"]
    assert close_names("GSM8", known) == ["gsm8k"]
    assert close_names("someone/some-set", known) == []


def test_an_alias_suggests_its_canonical_name():
    assert close_names("HJ_maths", {"HJ_math": "haijian06/Advanced-Math"}) == ["haijian06/Advanced-Math"]


def test_did_you_mean_reads_as_a_clause():
    assert did_you_mean("champs", ["champ", "cmath"]) == "; did you mean 'champ'?"
    assert did_you_mean("math-500", ["math500", "cmath", "gsm8k"]) == "; did you mean 'math500' or 'cmath'?"
    assert did_you_mean("zzz", ["champ"]) == ""


@pytest.mark.parametrize(("name", "suggested"), [
    ("blossom-math", "'AI-ModelScope/blossom-math-v2'"),
    ("gsm8", "'gsm8k'"),
    ("ruozhiba2", "'ruozhiba'"),
])
def test_a_mistyped_dataset_gets_the_closest_names(name, suggested):
    with pytest.raises(UserError, match=f"dataset '{name}' is neither .*; did you mean {suggested}"):
        source_kind(parse_spec(name).name)


def test_a_mistyped_generator_task_is_found_before_generating():
    with pytest.raises(UserError, match=r"dataset 'rg:arithmatic#5': unknown task 'arithmatic'; "
                                        r"did you mean 'rg:arithmetic'\?"):
        load_source(parse_spec("rg:arithmatic#5"))
    with pytest.raises(UserError, match="unknown task 'qwertyuiop'; see `mathtune data list`"):
        load_source(parse_spec("rg:qwertyuiop"))


def test_a_mistyped_benchmark_gets_the_closest_names():
    with pytest.raises(UserError, match=r"unknown benchmark 'gsm9k'; known benchmarks: .*; did you mean 'gsm8k'\?$"):
        get_benchmark("gsm9k")
    with pytest.raises(UserError, match=r"did you mean 'rg:gsm-symbolic'"):
        get_benchmark("rg:gsm_symbolc")
    with pytest.raises(UserError, match=r"did you mean 'math500'\?$"):
        get_benchmark("mah500=/data/math500.jsonl")
