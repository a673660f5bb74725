"""Comparing two evaluation folders: paired interval, fixed/broken counts, table, chart, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mathtune.errors import UserError
from mathtune.evaluate import cli
from mathtune.evaluate.benchmarks import BenchItem, Benchmark
from mathtune.evaluate.report import (
    compare,
    compare_runs,
    newcombe_paired_interval,
    paired_normal_interval,
)
from mathtune.evaluate.runner import commonest_answer, format_table, save_result, score_outputs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bench(name: str, n: int) -> tuple[Benchmark, list[BenchItem]]:
    items = [BenchItem(f"{name}/{i}", f"What is {i} + 0?", str(i)) for i in range(n)]
    return Benchmark(name, "en", "math", "{question}", lambda: list(items)), items


def _write_run(folder: Path, right: dict[str, set[int]], n: int = 10, samples: int = 1) -> Path:
    """An evaluation folder in which, per benchmark, the questions numbered in `right` are answered correctly."""
    summary = {"model": folder.name, "date": "2026-12-01T00:00:00", "settings": {}, "benchmarks": {}}
    for name, good in right.items():
        bench, items = _bench(name, n)
        outputs = [[f"\\boxed{{{i if i in good else -1}}}"] * samples for i in range(n)]
        save_result(folder, summary, score_outputs(bench, items, outputs))
    return folder


def test_newcombe_matches_published_value():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", Cavo et al. (2012):
    # table [[59, 6], [16, 80]] -> difference -0.0621, 95% CI -0.1186 to -0.0046.
    low, high = newcombe_paired_interval(both=59, only_a=16, only_b=6, neither=80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_newcombe_is_sane_at_the_edges():
    low, high = newcombe_paired_interval(10, 0, 0, 0)  # identical runs, all right: no collapse to a point
    assert low < 0 < high
    assert newcombe_paired_interval(0, 0, 10, 0)[0] > 0.5  # everything fixed
    assert newcombe_paired_interval(0, 0, 0, 0) == (-1.0, 1.0)
    low, high = newcombe_paired_interval(3, 4, 2, 1)
    assert -1 <= low < (2 - 4) / 10 < high <= 1


def test_paired_normal_interval():
    low, high = paired_normal_interval([0.5, 0.0, 1.0, 0.5])
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)
    assert paired_normal_interval([1.0]) == (-1.0, 1.0)


def test_compare_counts_fixed_and_broken_and_draws_a_chart(tmp_path):
    a = _write_run(tmp_path / "before", {"toy": {0, 1, 2, 3, 4}, "other": {0}})
    b = _write_run(tmp_path / "after", {"toy": {2, 3, 4, 5, 6, 7, 8}, "other": {0, 1}})
    (row, other) = compare_runs(a, b)
    assert (row.benchmark, row.n, row.accuracy_a, row.accuracy_b) == ("toy", 10, 0.5, 0.7)
    assert (row.fixed, row.broken, row.unmatched) == (4, 2, 0)
    assert row.diff == pytest.approx(0.2)
    assert (row.diff_low, row.diff_high) == pytest.approx(newcombe_paired_interval(3, 2, 4, 1))
    assert (other.fixed, other.broken) == (1, 0)

    text = compare(a, b, out_dir=tmp_path / "charts")
    assert "A: before" in text and "B: after" in text
    toy_line = next(line for line in text.splitlines() if line.startswith("toy"))
    assert "50.0%" in toy_line and "70.0%" in toy_line and "+20.0 [" in toy_line
    assert toy_line.split()[-3:] == ["4", "2", "10.0%"]  # ten different golds: always one answer scores 1 in 10
    png = tmp_path / "charts" / "comparison.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    from matplotlib.image import imread

    height, width, _ = imread(png).shape
    assert height > 100 and width > 100
    assert not list((tmp_path / "charts").glob(".*"))


def test_chart_defaults_to_the_second_folder(tmp_path):
    a = _write_run(tmp_path / "x", {"toy": {1}})
    b = _write_run(tmp_path / "y", {"toy": {1, 2}})
    compare(a, b)
    assert (b / "comparison.png").read_bytes()[:8] == PNG_SIGNATURE


def test_compare_matches_questions_by_id(tmp_path):
    a = _write_run(tmp_path / "a", {"toy": {0, 1}}, n=10)
    b = _write_run(tmp_path / "b", {"toy": {0, 1, 9}}, n=8)  # two questions missing, different order irrelevant
    (row,) = compare_runs(a, b)
    assert (row.n, row.unmatched, row.accuracy_a, row.accuracy_b) == (8, 2, 0.25, 0.25)
    assert "2 question(s) appear in only one run" in compare(a, b)


def test_compare_with_several_samples_uses_fractional_scores(tmp_path):
    a = _write_run(tmp_path / "a", {"toy": {0}}, samples=3)
    b_dir = tmp_path / "b"
    bench, items = _bench("toy", 10)
    outputs = [["\\boxed{-1}", f"\\boxed{{{i}}}", f"\\boxed{{{i}}}"] for i in range(10)]  # 2 of 3 right
    save_result(b_dir, {"model": "b", "benchmarks": {}}, score_outputs(bench, items, outputs))
    (row,) = compare_runs(a, b_dir)
    assert row.accuracy_a == pytest.approx(0.1) and row.accuracy_b == pytest.approx(2 / 3)
    diffs = [2 / 3 - (1.0 if i == 0 else 0.0) for i in range(10)]
    assert (row.diff_low, row.diff_high) == pytest.approx(paired_normal_interval(diffs))
    assert (row.fixed, row.broken) == (9, 0)  # majority verdicts


def test_compare_errors(tmp_path):
    a = _write_run(tmp_path / "a", {"toy": {0}})
    with pytest.raises(UserError, match="summary.json is missing"):
        compare(a, tmp_path / "nowhere")
    b = _write_run(tmp_path / "b", {"else": {0}})
    with pytest.raises(UserError, match="share no benchmark"):
        compare(a, b)
    (a / "toy" / "predictions.jsonl").write_text('{"id": "x", "score": 1, "correct": true}\n{"id": "y"}\n')
    with pytest.raises(UserError, match=r"predictions.jsonl:2"):
        compare(a, a)


def test_cli_compare(tmp_path, capsys):
    a = _write_run(tmp_path / "a", {"toy": {0, 1}})
    b = _write_run(tmp_path / "b", {"toy": {0, 1, 2}})
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--compare", str(a), str(b), "--output_dir", str(tmp_path / "out")])) == 0
    printed = capsys.readouterr().out
    assert "+10.0" in printed and str(tmp_path / "out" / "comparison.png") in printed
    assert json.loads((b / "summary.json").read_text())["benchmarks"]["toy"]["n"] == 10


def test_a_zero_percent_bar_still_shows_its_colour(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    from mathtune.evaluate.report import Comparison, draw_chart

    rows = [Comparison("rg:syllogism", 40, 0.0, 0.125, 0.125, 0.0, 0.3, 5, 0, 0)]
    image = imread(draw_chart(rows, "before", "after", tmp_path / "comparison.png"))[:, :, :3]
    first = to_rgb("C0")  # the first series' colour, the one whose bar has no height
    matches = (abs(image - first) < 0.02).all(axis=2)
    rows_hit = matches.nonzero()[0]
    # The legend sits at the top left; the 0% bar's mark and value are below the middle of the picture.
    assert (rows_hit > image.shape[0] / 2).sum() > 20


def test_the_trivial_baseline_stands_next_to_every_accuracy(tmp_path):
    # 10 questions whose gold is "Yes" 7 times: always answering "Yes" scores 70%, whatever the model does
    golds = ["Yes"] * 7 + ["No"] * 3
    items = [BenchItem(f"yn/{i}", f"Question {i}?", gold) for i, gold in enumerate(golds)]
    bench = Benchmark("yn", "en", "math", "{question}", lambda: list(items))
    assert commonest_answer(golds) == ("Yes", 0.7)
    assert commonest_answer([]) == (None, 0.0)
    assert commonest_answer([3, "3", 4]) == ("3", pytest.approx(2 / 3))  # answers compare as text

    summary = {"model": "m", "date": "2026-12-04T00:00:00", "settings": {}, "benchmarks": {}}
    result = score_outputs(bench, items, [["\\boxed{No}"]] * 10)
    assert (result.accuracy, result.commonest_gold, result.commonest_accuracy) == (0.3, "Yes", 0.7)
    save_result(tmp_path / "a", summary, result)
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())["benchmarks"]["yn"]
    assert (saved["commonest_gold"], saved["commonest_accuracy"]) == ("Yes", 0.7)
    header, row = format_table(summary).splitlines()[1:3]
    assert "commonest answer" in header
    assert row.split()[:3] == ["yn", "10", "30.0%"] and "70.0%" in row.split()

    summary_b = {**summary, "benchmarks": {}}
    save_result(tmp_path / "b", summary_b, score_outputs(bench, items, [["\\boxed{Yes}"]] * 10))
    (row_b,) = compare_runs(tmp_path / "a", tmp_path / "b")
    assert (row_b.accuracy_a, row_b.accuracy_b, row_b.commonest) == (0.3, 0.7, 0.7)


def test_a_summary_written_before_the_baseline_existed_still_prints():
    old = {"n": 4, "num_samples": 1, "accuracy": 0.5, "ci_low": 0.15, "ci_high": 0.85, "pass_at_k": {"1": 0.5},
           "majority_accuracy": None, "unparsed": 0, "mean_output_tokens": 12.0}
    line = format_table({"model": "m", "benchmarks": {"old": old}}).splitlines()[2]
    assert line.split()[:5] == ["old", "4", "50.0%", "[15.0,", "85.0]"] and line.split()[5] == "-"
