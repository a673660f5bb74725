"""Benchmark registry: built-in sets, CHAMP golds, hub row mappings on local fixtures, errors and rg_score."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mathtune.data import generators
from mathtune.data.textmatch import match_text
from mathtune.errors import DataError, UserError
from mathtune.evaluate import benchmarks
from mathtune.evaluate.benchmarks import BenchItem, champ_golds, champ_latex, get_benchmark, list_benchmarks, rg_score

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
RG_NAMES = [f"rg:{task}" for task in generators.list_tasks()]


def test_registry_lists_every_set():
    # Each task that holds structures out is followed by its unseen split.
    logic = RG_NAMES.index("rg:propositional_logic") + 1
    assert list_benchmarks() == [RG_NAMES[0], "rg:gsm-symbolic-unseen", *RG_NAMES[1:logic],
                                 "rg:propositional_logic-unseen", *RG_NAMES[logic:], "champ", "gsm8k", "math500",
                                 "cmath", "svamp"]


def test_unknown_benchmark_lists_known_ones():
    with pytest.raises(UserError, match="unknown benchmark 'gsm9k'; known benchmarks: rg:gsm-symbolic, .*svamp"):
        get_benchmark("gsm9k")
    with pytest.raises(UserError, match="unknown benchmark 'rg:zebra_puzzles'"):
        get_benchmark("rg:zebra_puzzles")


@pytest.mark.parametrize(
    ("name", "checker"),
    [
        ("rg:gsm-symbolic", "math"),
        ("rg:arithmetic", "math"),
        ("rg:equations", "math"),
        ("rg:fractions", "rg"),
        ("rg:knights_knaves", "rg"),
        ("rg:syllogism", "rg"),
        ("rg:propositional_logic", "rg"),
    ],
)
def test_rg_benchmarks_are_the_held_out_pool(name, checker):
    bench = get_benchmark(name)
    assert (bench.language, bench.checker) == ("en", checker)
    items = bench.load()
    assert len(items) == generators.EVAL_POOL
    train = generators.generate(name[3:], 200, seed=42)
    questions = {match_text(item.question) for item in items}
    assert not any(match_text(row.question().split("\n\nPlease reason")[0]) in questions for row in train)


def test_spellings_and_data_seed():
    assert get_benchmark("RG:Knights-Knaves").name == "rg:knights_knaves"
    assert get_benchmark("rg:gsm_symbolic").name == "rg:gsm-symbolic"
    a = get_benchmark("rg:arithmetic", data_seed=1).load(limit=5)
    assert a == get_benchmark("rg:arithmetic", data_seed=1).load(limit=5)
    assert a != get_benchmark("rg:arithmetic", data_seed=2).load(limit=5)


def test_limit_is_a_seeded_subset_in_benchmark_order():
    bench = get_benchmark("rg:syllogism")
    every = bench.load()
    some = bench.load(limit=20, seed=3)
    assert len(some) == 20 and some == bench.load(limit=20, seed=3)
    positions = [every.index(item) for item in some]
    assert positions == sorted(positions)
    assert some != bench.load(limit=20, seed=4)
    assert bench.load(limit=5000) == every


def test_prompt_renders_literal_boxed_braces():
    bench = get_benchmark("rg:arithmetic")
    text = bench.render("Calculate 2 + 2.")
    assert text.startswith("Calculate 2 + 2.") and text.endswith("\\boxed{}.")
    assert bench.prompt.format(question="Q") == bench.render("Q")


@pytest.mark.parametrize("name", RG_NAMES)
def test_rg_score_accepts_every_gold(name):
    for item in get_benchmark(name).load(limit=25, seed=0):
        assert rg_score(item, item.gold) == 1.0, item.gold


def test_rg_score_undoes_latex_wrapping_and_rejects_wrong_answers():
    knight = get_benchmark("rg:knights_knaves").load(limit=1)[0]
    assert rg_score(knight, f"\\text{{{knight.gold}}}") == 1.0
    assert rg_score(knight, knight.gold.lower() + ".") == 1.0
    assert rg_score(knight, "nobody") == 0.0
    assert rg_score(knight, None) == 0.0

    syllogism = get_benchmark("rg:syllogism").load(limit=1)[0]
    other = "No" if syllogism.gold == "Yes" else "Yes"
    assert rg_score(syllogism, f"\\text{{{syllogism.gold.lower()}}}") == 1.0
    assert rg_score(syllogism, other) == 0.0

    fraction = get_benchmark("rg:fractions").load(limit=1)[0]
    num, den = (
        fraction.meta["entry"]["metadata"]["simplified_numerator"],
        fraction.meta["entry"]["metadata"]["simplified_denominator"],
    )
    assert rg_score(fraction, f"\\frac{{{num}}}{{{den}}}") == 1.0
    assert rg_score(fraction, f"{2 * num}/{2 * den}") < 1.0  # equal value, not in lowest terms


def test_rg_score_reads_latex_logic_operators():
    for item in get_benchmark("rg:propositional_logic").load(limit=10, seed=1):
        latex = item.gold
        for symbol, command in [("∨", r"\lor "), ("∧", r"\land "), ("¬", r"\neg "), ("→", r"\to "), ("↔", r"\iff ")]:
            latex = latex.replace(symbol, command)
        assert rg_score(item, f"${latex}$") == 1.0, latex


def test_rg_items_survive_json():
    item = get_benchmark("rg:knights_knaves").load(limit=1)[0]
    again = json.loads(json.dumps(item.meta))
    assert rg_score(BenchItem(item.id, item.question, item.gold, again), item.gold) == 1.0


@pytest.mark.parametrize(
    ("answer", "golds", "free_form"),
    [
        ("239", ["239"], False),
        ("C(10, 5), or equivalently 252", ["252", "\\binom{10}{5}"], False),
        ("5/14, or approximately 35.7%", ["5/14"], False),
        ("sqrt(3)/3, or equivalently 1/sqrt(3)", ["1/\\sqrt{3}", "\\sqrt{3}/3"], False),
        ("2^(n-1)", ["2^{n-1}"], False),
        ("2^floor(n/2)*floor(n/2)!", ["2^{\\lfloor n/2 \\rfloor}*{\\lfloor n/2 \\rfloor}!"], False),
        ("The limit exists and is equal to (1+sqrt(4a+1))/2", ["(1+\\sqrt{4a+1})/2"], False),
        ("0 is the only possible value", ["0"], False),
        ("100 (i.e., all values)", ["100"], False),
        ("98 values", ["98"], False),
        ("376 and 625", ["376, 625"], False),
        ("x=±1", ["x=\\pm 1"], False),
        ("No", ["No"], True),
        ("No integer solutions", ["No integer solutions"], True),
        ("f(x)=0 or f(x)=1", ["f(x)=0 or f(x)=1"], True),
    ],
)
def test_champ_golds(answer, golds, free_form):
    assert champ_golds(answer) == (golds, free_form)


def test_champ_latex_parses_with_math_verify():
    from math_verify import parse, verify

    for plain, latex_prediction in [
        ("2^floor(n/2)*floor(n/2)!", "2^{\\lfloor n/2\\rfloor}\\lfloor n/2\\rfloor!"),
        ("C(10, 5)", "252"),
        ("(a^3+2b)/(3a)", "\\frac{a^3+2b}{3a}"),
    ]:
        gold = parse(f"\\boxed{{{champ_latex(plain)}}}", parsing_timeout=None)
        assert verify(gold, parse(f"\\boxed{{{latex_prediction}}}", parsing_timeout=None), timeout_seconds=None)


def test_champ_loads_offline():
    bench = get_benchmark("champ")
    assert (bench.language, bench.checker) == ("en", "math")
    items = bench.load()
    assert len(items) == 270 and len({item.id for item in items}) == 270
    by_id = {item.id: item for item in items}
    assert by_id["P_Combinatorics_2"].gold == "252"
    assert by_id["P_Combinatorics_2"].meta["answer_text"] == "C(10, 5), or equivalently 252"
    assert by_id["P_Sequence_41"].gold == "(1+\\sqrt{4a+1})/2"
    assert 40 < sum(item.meta["free_form"] for item in items) < 100


def test_gsm8k_rows():
    items = get_benchmark("gsm8k", local_path=str(FIXTURES / "gsm8k.jsonl")).load()
    assert [item.gold for item in items] == ["18", "3", "70000"]
    assert items[0].id == "gsm8k/0" and items[0].question.startswith("Janet’s ducks lay 16 eggs")
    assert "####" in items[0].meta["solution"]


def test_name_equals_path_syntax():
    bench = get_benchmark(f"math500={FIXTURES / 'math500.jsonl'}")
    assert bench.name == "math500" and bench.checker == "math"
    items = bench.load()
    assert [item.gold for item in items] == ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\frac{14}{3}", "9"]
    assert items[0].id == "test/precalculus/807.json" and items[0].meta["level"] == 2


def test_cmath_is_chinese():
    bench = get_benchmark("cmath", local_path=str(FIXTURES / "cmath.jsonl"))
    assert bench.language == "zh" and "请逐步推理" in bench.render("题")
    items = bench.load()
    assert [item.gold for item in items] == ["18", "6", "1.8"]
    assert items[0].id == "cmath/6e98e414" and items[0].meta["grade"] == "1"


def test_svamp_joins_body_and_question():
    items = get_benchmark("svamp", local_path=str(FIXTURES / "svamp.jsonl")).load()
    assert [item.gold for item in items] == ["145", "16", "51"]
    assert items[0].id == "chal-777"
    assert items[0].question.endswith("93 groups How big is each group of bananas?")
    row = json.loads((FIXTURES / "svamp.jsonl").read_text().splitlines()[2])
    del row["question_concat"]
    assert benchmarks._svamp_item(row, 2).question == items[2].question


def test_hub_unreachable_is_one_line(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as caught:
        get_benchmark("gsm8k").load()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("benchmark 'gsm8k': cannot load openai/gsm8k")
    assert "gsm8k=PATH" in message


def test_local_copy_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_benchmark("svamp", local_path=str(tmp_path / "missing.jsonl")).load()
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(DataError, match=r"gsm8k.jsonl:2: invalid JSON"):
        get_benchmark("gsm8k", local_path=str(bad)).load()
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"problem": "q"}\n')
    with pytest.raises(
        DataError, match=r"gsm8k.jsonl:2: missing field 'question' \(gsm8k rows need question, answer\)"
    ):
        get_benchmark("gsm8k", local_path=str(bad)).load()
    with pytest.raises(UserError, match="built in and takes no local path"):
        get_benchmark("rg:arithmetic", local_path=str(bad))


def test_local_parquet_copy(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "svamp.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    items = get_benchmark("svamp", local_path=str(tmp_path / "test-00000-of-00001.parquet")).load()
    assert [item.gold for item in items] == ["145", "16", "51"]


def test_an_unreachable_hub_fails_at_once_without_the_clients_retries(monkeypatch, capsys):
    import datasets

    def never(*args, **kwargs):
        raise AssertionError("load_dataset must not be tried when the hub cannot be reached")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(datasets, "load_dataset", never)
    start = time.perf_counter()
    with pytest.raises(UserError) as caught:
        get_benchmark("gsm8k").load()
    assert time.perf_counter() - start < 10  # the hub client's own retries take about 30 s
    message = str(caught.value)
    assert "\n" not in message and "127.0.0.1 is not reachable" in message and "gsm8k=PATH" in message
    assert capsys.readouterr().err == ""


def test_gsm_symbolic_unseen_is_a_benchmark_of_held_out_templates():
    from mathtune import sets

    seen = get_benchmark("rg:gsm-symbolic").load(limit=200, seed=0)
    unseen_bench = get_benchmark("RG:gsm_symbolic-unseen")
    assert (unseen_bench.name, unseen_bench.checker) == ("rg:gsm-symbolic-unseen", "math")
    unseen = unseen_bench.load()
    assert len(unseen) == generators.EVAL_POOL and unseen[0].id == "rg:gsm-symbolic-unseen/0"
    assert {item.meta["structure"] for item in unseen} <= sets.GSM_SYMBOLIC_HELD_OUT
    assert not {item.meta["structure"] for item in seen} & sets.GSM_SYMBOLIC_HELD_OUT
    assert not {item.question for item in seen} & {item.question for item in unseen}
    assert rg_score(unseen[0], unseen[0].gold) == 1.0


def test_labelled_local_copies(tmp_path):
    path = FIXTURES / "gsm8k.jsonl"
    bench = get_benchmark(f"platinum:gsm8k={path}")
    assert bench.name == "platinum" and bench.checker == "math"
    assert bench.load() == get_benchmark(f"gsm8k={path}").load()
    two = benchmarks.resolve_benchmarks([f"a:gsm8k={path}", f"b:gsm8k={path}", "rg:arithmetic"])
    assert [b.name for b in two] == ["a", "b", "rg:arithmetic"]
    with pytest.raises(UserError, match="label before ':' must be letters"):
        get_benchmark(f"a b:gsm8k={path}")
    with pytest.raises(UserError, match="built in and takes no local path"):
        get_benchmark(f"mine:champ={path}")


@pytest.mark.parametrize(
    "names",
    [
        ["gsm8k=A", "gsm8k=B"],  # two unlabelled copies of one benchmark
        ["x:gsm8k=A", "x:svamp=B"],  # one label twice
        ["rg:arithmetic", "rg:basic_arithmetic"],  # two spellings of one set
        ["rg:arithmetic", "rg_arithmetic:gsm8k=A"],  # a label filed in the folder of another benchmark
    ],
)
def test_benchmarks_that_would_share_results_are_refused(names):
    names = [n.replace("=A", f"={FIXTURES / 'gsm8k.jsonl'}").replace("=B", f"={FIXTURES / 'svamp.jsonl'}")
             for n in names]
    with pytest.raises(UserError) as caught:
        benchmarks.resolve_benchmarks(names)
    message = str(caught.value)
    assert "\n" not in message and "would both be reported as" in message and "LABEL:" in message


def test_a_cloned_repository_folder_gives_its_test_split_only(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k.jsonl").read_text().splitlines()]
    for folder, split, chosen in (("main", "train", rows[:1]), ("main", "test", rows[1:]), ("socratic", "test", rows)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{split}-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    items = get_benchmark(f"gsm8k={tmp_path}").load()
    assert [item.gold for item in items] == ["3", "70000"]
    (tmp_path / "main" / "test-00000-of-00001.jsonl").unlink()
    with pytest.raises(UserError, match="holds no files of the 'test' split"):
        get_benchmark(f"gsm8k={tmp_path / 'main'}").load()


def test_propositional_logic_unseen_asks_only_four_variable_problems_with_reasoning_gyms_checker():
    seen = get_benchmark("rg:propositional_logic").load(limit=100, seed=0)
    bench = get_benchmark("rg:propositional_logic-unseen")
    assert bench.checker == get_benchmark("rg:propositional_logic").checker == "rg"
    unseen = bench.load(limit=100, seed=0)
    assert {item.meta["structure"] for item in unseen} == {4}
    assert {item.meta["structure"] for item in seen} <= {2, 3}
    assert not {item.question for item in seen} & {item.question for item in unseen}
    assert rg_score(unseen[0], unseen[0].gold) == 1.0
