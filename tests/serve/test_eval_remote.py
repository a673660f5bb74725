"""`mathtune eval --api_base` against the test server gives what local `eval` gives on the same model (greedy):
the same prompts, replies, grades and summary; and its flags fail in one line."""

from __future__ import annotations

import json

import pytest

from mathtune.cli import main

BENCH = ["--benchmarks", "rg:arithmetic", "rg:syllogism", "--limit", "5", "--max_new_tokens", "12"]


def _records(folder, bench: str) -> list[dict]:
    return [json.loads(line) for line in (folder / bench / "predictions.jsonl").read_text().splitlines()]


def test_eval_through_the_server_equals_local_eval(server, tiny_model_dir, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["eval", "--model", str(tiny_model_dir), *BENCH, "--output_dir", str(local)]) == 0
    assert main(["eval", "--api_base", server.url, "--served_model", "tiny", *BENCH, "--batch_size", "4",
                 "--output_dir", str(remote)]) == 0
    for bench in ("rg_arithmetic", "rg_syllogism"):
        mine, theirs = _records(local, bench), _records(remote, bench)
        assert len(mine) == len(theirs) == 5
        for a, b in zip(mine, theirs, strict=True):
            # token counts: re-tokenized text locally, the server's generated ids remotely
            assert all(isinstance(n, int) and 0 <= n <= 12 for n in b.pop("output_tokens"))
            a.pop("output_tokens")
            assert a == b
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (local, remote)]
    for name in ("rg:arithmetic", "rg:syllogism"):
        a, b = (s["benchmarks"][name] for s in summaries)
        for key in ("n", "accuracy", "ci_low", "ci_high", "unparsed", "pass_at_k"):
            assert a[key] == b[key], key
    assert summaries[1]["model"] == f"tiny at {server.url}"


def test_eval_picks_the_only_served_model(server, tmp_path, capsys):
    assert main(["eval", "--api_base", server.url + "/", "--benchmarks", "rg:arithmetic", "--limit", "2",
                 "--max_new_tokens", "4", "--output_dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["model"].startswith("tiny at ")


@pytest.mark.parametrize(("argv", "message"), [
    (["--served_model", "tiny"], "go with --api_base"),
    (["--api_base", "localhost:8000"], "expected an http:// or https:// URL"),
    (["--api_base", "http://127.0.0.1:9/v1"], "cannot reach the server"),
    (["--api_base", "http://127.0.0.1:9/v1", "--model", "x"], "drop --model"),
    (["--api_base", "http://127.0.0.1:9/v1", "--baseline"], "--baseline needs the adapter locally"),
])
def test_bad_remote_flags_in_one_line(capsys, tmp_path, argv, message):
    assert main(["eval", "--benchmarks", "rg:arithmetic", "--output_dir", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("mathtune eval: error:") and len(err.splitlines()) == 1


def test_unknown_served_model_names_the_served_ones(server, tmp_path, capsys):
    assert main(["eval", "--api_base", server.url, "--served_model", "gpt-9", "--benchmarks", "rg:arithmetic",
                 "--output_dir", str(tmp_path / "o")]) == 2
    assert "it serves: tiny" in capsys.readouterr().err
