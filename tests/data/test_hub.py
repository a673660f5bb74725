import os
import subprocess
import sys

import pytest

from mathtune.data import hub
from mathtune.errors import UserError


def _messages(conversations):
    return [tuple((m["role"], m["content"]) for m in c.messages) for c in conversations]


def test_ruozhiba_rows_become_response_only_jokes(fixtures):
    parsed = hub.load_hub("ruozhiba", local_path=fixtures / "hub" / "ruozhiba.jsonl")
    assert _messages(parsed.conversations) == [
        (("assistant", "只剩一个心脏了还能活吗？，能，人本来就只有一个心脏。"),),
        (("assistant", "生鱼片其实是死鱼片"),),
        (("assistant", "咖啡因加了很多，但是我还是睡着了"),),
        (("assistant", "我买了一本2024年的日历"),),
    ]
    # ms-swift filters empty jokes out; here they are counted, not dropped silently.
    assert parsed.bad_rows.count == 1
    assert "ruozhiba.jsonl:5: field 'title'/'content' is empty" in parsed.bad_rows.examples[0]


def test_looksjuicy_ruozhiba_is_question_and_answer(fixtures):
    parsed = hub.load_hub("ruozhiba-qa", local_path=fixtures / "hub" / "looksjuicy_ruozhiba.jsonl")
    assert _messages(parsed.conversations)[0] == (
        ("user", "只剩一个心脏了还能活吗？"),
        ("assistant", "能，人本来就只有一个心脏。"),
    )


def test_blossom_math_appends_the_answer_line(fixtures):
    parsed = hub.load_hub("AI-ModelScope/blossom-math-v2", local_path=fixtures / "hub" / "blossom_math_v2.jsonl")
    assert _messages(parsed.conversations) == [
        (
            ("user", "小明有5个苹果，又买了3个，一共有几个？"),
            ("assistant", "5 + 3 = 8，所以一共有8个苹果。\n\nAnswer: 8"),
        ),
        (("user", "Tom has 12 pens and gives away 5. How many are left?"), ("assistant", "12 - 5 = 7.\n\nAnswer: 7")),
    ]
    assert parsed.bad_rows.count == 1 and "field 'output' missing" in parsed.bad_rows.examples[0]


def test_gsm8k_keeps_the_final_answer_line(fixtures):
    parsed = hub.load_hub("gsm8k", local_path=fixtures / "hub" / "gsm8k.jsonl")
    first = parsed.conversations[0].messages
    assert first[0]["content"].startswith("Natalia sold clips")
    assert first[1]["content"].endswith("\n#### 72")
    assert parsed.conversations[1].origin.endswith("gsm8k.jsonl:2")


def test_advanced_math_detects_its_row_shape(fixtures):
    parsed = hub.load_hub("HJ_math", local_path=fixtures / "hub" / "advanced_math.jsonl")
    assert _messages(parsed.conversations)[1] == (("user", "What is the derivative of x^3?"), ("assistant", "3x^2"))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("ruozhiba", "ruozhiba"),
        ("AI-ModelScope/ruozhiba", "ruozhiba"),
        ("blossom-math-zh", "AI-ModelScope/blossom-math-v2"),
        ("azure99/blossom-math-v2", "AI-ModelScope/blossom-math-v2"),
        ("openai/gsm8k", "gsm8k"),
        ("haijian06/Advanced-Math", "haijian06/Advanced-Math"),
    ],
)
def test_named_sets_and_aliases(name, canonical):
    assert hub.is_hub_name(name)
    assert hub.resolve(name).name == canonical


def test_generic_specs():
    hf = hub.resolve("HF::org/some-set:subset_a")
    assert (hf.hf_id, hf.ms_id, hf.subsets, hf.mapper) == ("org/some-set", None, ("subset_a",), None)
    ms = hub.resolve("MS::org/name")
    assert (ms.hf_id, ms.ms_id, ms.subsets) == (None, "org/name", (None,))
    assert not hub.is_hub_name("org/name")
    for bad in ("HF::", "HF::org/name:", "HF::a b/c"):
        with pytest.raises(UserError, match="expected HF::org/name"):
            hub.resolve(bad)


def test_generic_set_rows_follow_columns_and_skip_flag(monkeypatch):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": 2}, {"question": "q3", "answer": "a3"}]
    seen = []

    def fake_load(repo, subset, split):
        seen.append((repo, subset, split))
        return rows

    monkeypatch.setattr(hub, "load_hf_split", fake_load)
    columns = {"question": "query", "answer": "response"}
    with pytest.raises(UserError, match=r"HF::org/qa:main:2: field 'response' must be a string, got int"):
        hub.load_hub("HF::org/qa:main", columns=columns)
    parsed = hub.load_hub("HF::org/qa:main", columns=columns, skip_bad_rows=True)
    assert seen[-1] == ("org/qa", "main", "train")
    assert [c.origin for c in parsed.conversations] == ["HF::org/qa:main[0]", "HF::org/qa:main[2]"]
    assert parsed.bad_rows.count == 1


def test_named_set_with_subsets_concatenates_them(monkeypatch):
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(hub, "_load_ms", lambda repo, subset, split: [{"title": f"{subset} joke"}])
    parsed = hub.load_hub("ruozhiba")
    assert [c.messages[0]["content"] for c in parsed.conversations] == [
        "post-annual joke",
        "title-good joke",
        "title-norm joke",
    ]
    assert parsed.conversations[1].origin == "ruozhiba:title-good[0]"


def test_unreachable_hub_is_one_line_suggesting_a_local_copy(monkeypatch):
    def offline(repo, subset, split):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(hub, "load_hf_split", offline)
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as exc:
        hub.load_hub("gsm8k")
    assert str(exc.value) == (
        "could not fetch dataset 'gsm8k' from the hub (ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub "
        "(LocalEntryNotFoundError)); pass a local copy in its own schema instead: --dataset gsm8k=path/to/file.jsonl"
    )


def test_modelscope_only_set_without_client(monkeypatch):
    monkeypatch.setattr(hub.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"could not fetch dataset 'ruozhiba' .*`modelscope` client is not installed"):
        hub.load_hub("ruozhiba")


def test_real_datasets_call_with_hf_hub_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "HF_DATASETS_OFFLINE": "1"}
    code = (
        "from mathtune.data.hub import load_hub\n"
        "from mathtune.errors import UserError\n"
        "try:\n    load_hub('AI-ModelScope/blossom-math-v2')\n"
        "except UserError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("could not fetch dataset 'AI-ModelScope/blossom-math-v2' from the hub (")
    assert line.endswith("pass a local copy in its own schema instead: "
                         "--dataset AI-ModelScope/blossom-math-v2=path/to/file.jsonl")
    assert "\n" not in line
