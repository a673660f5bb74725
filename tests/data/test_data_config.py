import argparse

import pytest

from mathtune.data.config import DataArgs, add_data_arguments, parse_bool, parse_columns
from mathtune.errors import UserError


def _parse(argv: list[str]) -> DataArgs:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return DataArgs(**vars(parser.parse_args(argv)))


def test_parser_defaults_equal_dataclass_defaults():
    assert _parse([]) == DataArgs()
    assert DataArgs().split_dataset_ratio == 0.01 and DataArgs().truncation_strategy == "delete"


def test_swift_flags_round_trip():
    args = _parse(
        [
            "--dataset", "ruozhiba#5000", "AI-ModelScope/blossom-math-v2#5000", "/content/HJ_math.jsonl",
            "--dataset_format", "alpaca",
            "--columns", '{"question": "query"}',
            "--split_dataset_ratio", "0.05",
            "--data_seed", "7",
            "--max_length", "512",
            "--truncation_strategy", "truncation_left",
            "--system", "Think step by step.",
        ]
    )  # fmt: skip
    assert args.dataset == ("ruozhiba#5000", "AI-ModelScope/blossom-math-v2#5000", "/content/HJ_math.jsonl")
    assert args.dataset_format == "alpaca" and args.format_or_none == "alpaca"
    assert args.columns == {"question": "query"}
    assert (args.split_dataset_ratio, args.data_seed, args.max_length) == (0.05, 7, 512)
    assert args.truncation_strategy == "truncation_left" and args.system == "Think step by step."


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], False),
        (["--skip_bad_rows"], True),
        (["--skip_bad_rows", "true"], True),
        (["--skip_bad_rows", "false"], False),
    ],
)
def test_skip_bad_rows_accepts_bare_and_boolean_values(argv, expected):
    assert _parse(argv).skip_bad_rows is expected


def test_bad_flag_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["--columns", "{not json"])
    assert exc.value.code == 2
    assert "--columns" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["--truncation_strategy", "middle"])


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"dataset": ("",)}, "--dataset"),
        ({"dataset_format": "yaml"}, "--dataset_format"),
        ({"columns": {"a": 1}}, "--columns"),
        ({"columns": "[1, 2]"}, "--columns"),
        ({"split_dataset_ratio": 1.0}, "--split_dataset_ratio"),
        ({"split_dataset_ratio": -0.1}, "--split_dataset_ratio"),
        ({"data_seed": "42"}, "--data_seed"),
        ({"skip_bad_rows": "yes"}, "--skip_bad_rows"),
        ({"max_length": 0}, "--max_length"),
        ({"max_length": True}, "--max_length"),
        ({"truncation_strategy": "left"}, "--truncation_strategy"),
        ({"system": 3}, "--system"),
    ],
)
def test_validation_names_the_flag(kwargs, flag):
    with pytest.raises(UserError) as exc:
        DataArgs(**kwargs)
    assert str(exc.value).startswith(flag)


def test_values_from_yaml_are_normalised():
    args = DataArgs(dataset=["a.jsonl", " rg:basic_arithmetic#10 "], columns='{"q": "query"}', dataset_format="auto")
    assert args.dataset == ("a.jsonl", "rg:basic_arithmetic#10")
    assert args.columns == {"q": "query"}
    assert args.format_or_none is None


def test_parse_helpers():
    assert parse_columns(None) is None
    assert parse_columns({"a": "query"}) == {"a": "query"}
    # renamed to a name no shape reads, the column would be lost and the row could parse as another shape
    with pytest.raises(UserError, match="'query' is renamed to 'nonexist', which no row shape reads"):
        parse_columns('{"query": "nonexist"}')
    assert [parse_bool(v) for v in ("True", "1", "no", "OFF")] == [True, True, False, False]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("maybe")
