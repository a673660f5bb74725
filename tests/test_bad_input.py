"""Bad input from a user, for every verb: one line on stderr naming what and where, exit code 2, no traceback, and
nothing left behind (no run dir, no partial output, no file rewritten)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from mathtune.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, tiny_tokenizer, train_tiny_run) -> dict[str, Path]:
    """Every bad file, folder and model the table below refers to, plus a real run with a checkpoint."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = tmp_path_factory.mktemp("bad")
    texts = {
        "good.jsonl": json.dumps({"query": "What is 1 + 1?", "response": "2"}) + "\n",
        "nofield.jsonl": json.dumps({"query": "q", "response": "r"}) + "\n" + json.dumps({"query": "q2"}) + "\n",
        "truncated.jsonl": '{"query": "q", "response": "r"}\n{"query": "q2", "resp',
        "empty.jsonl": "",
        "schema.jsonl": json.dumps({"foo": 1}) + "\n",
        "notobj.jsonl": "[1, 2]\n",
        "bad.yaml": "learning_rate: [1, 2\n",
        "unknown.yaml": "learning_rat: 0.1\n",
        "dtype_number.yaml": "dtype: 5\n",
        "steps_fraction.yaml": "max_steps: 1.5\n",
        "bool_number.yaml": "trust_remote_code: 5\n",
        "list_number.yaml": "eval_benchmarks: 5\n",
        "path_number.yaml": "output_dir: 5\n",
        # A 20 MB line: refused before it is tokenized (tokenizing alone would take a minute).
        "huge.jsonl": json.dumps({"query": "7 " * 10_000_000}) + "\n",
        "huge_row.jsonl": json.dumps({"query": "7 " * 10_000_000, "response": "14"}) + "\n",
        "surrogate.jsonl": '{"query": "caf\\ud800", "response": "r"}\n',
        "alias.yaml": "a: &x 1\nlearning_rate: *x\n",
    }
    for name, text in texts.items():
        (tmp / name).write_text(text)
    (tmp / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage\x9c\n")
    (tmp / "latin1.jsonl").write_bytes(b'{"query": "caf\xe9", "response": "r"}\n')
    (tmp / "adir").mkdir()

    # A run with checkpoints, trained on the tiny model through the CLI.
    run = train_tiny_run(tmp, tiny_model_dir, rows=8)
    shutil.copytree(run / "checkpoint-2", run / ".checkpoint-3.partial")  # a save cut short

    # A model of another shape, the same tokenizer.
    other = tmp / "other-llama"
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(other)
    tiny_tokenizer.save_pretrained(other)

    def adapter_run(name: str, base: object) -> Path:
        """A copy of the checkpoint in a run whose args.json names `base` as the base model."""
        folder = tmp / name / "v0-20260101-000000"
        shutil.copytree(run / "checkpoint-2", folder / "checkpoint-2")
        (folder / "checkpoint-2" / "mathtune_base.json").unlink()  # as written before checkpoints recorded their base
        args = json.loads((run / "args.json").read_text())
        args["model"]["model_id_or_path"] = base
        (folder / "args.json").write_text(json.dumps(args))
        return folder / "checkpoint-2"

    pickled = Path(shutil.copytree(tiny_model_dir, tmp / "pickled-llama"))
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    pickled_adapter = Path(shutil.copytree(run / "checkpoint-2", tmp / "pickled-adapter"))
    torch.save(load_file(pickled_adapter / "adapter_model.safetensors"), pickled_adapter / "adapter_model.bin")
    (pickled_adapter / "adapter_model.safetensors").unlink()

    (tmp / "logs" / "truncated").mkdir(parents=True)
    (tmp / "logs" / "truncated" / "logging.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n')
    (tmp / "logs" / "no-loss").mkdir()
    (tmp / "logs" / "no-loss" / "logging.jsonl").write_text('{"step": 1}\n')
    (tmp / "logs" / "latin1").mkdir()
    (tmp / "logs" / "latin1" / "logging.jsonl").write_bytes(b'{"step": 1, "loss": 2.0}\n{"note": "caf\xe9"}\n')
    (tmp / "logs" / "huge").mkdir()
    (tmp / "logs" / "huge" / "logging.jsonl").write_text("x" * 20_000_000 + "\n")
    (tmp / "not-a-summary").mkdir()
    (tmp / "not-a-summary" / "summary.json").write_text('{"benchmarks": {"rg:syllogism": 5}}')
    (tmp / "precious").mkdir()
    (tmp / "precious" / "notes.txt").write_text("keep me")
    return {"tmp": tmp, "model": tiny_model_dir, "other": other, "run": run, "ckpt": run / "checkpoint-2",
            "orphan": adapter_run("orphan", str(tmp / "deleted-model")), "misfit": adapter_run("misfit", str(other)),
            "numbered": adapter_run("numbered", 5),
            "pickled": pickled, "pickled_adapter": pickled_adapter}


S = ["sft", "--output_dir", "{tmp}/output"]
SM = [*S, "--model", "{model}"]
SG = [*SM, "--dataset", "{tmp}/good.jsonl"]
INF = ["infer", "--ckpt_dir", "{model}"]
INO = [*INF, "--output", "{tmp}/answers.jsonl", "--input"]
E = ["eval", "--output_dir", "{tmp}/eval", "--model", "{model}"]
EB = [*E, "--benchmarks", "rg:arithmetic", "--limit", "1"]
EO = ["eval", "--model", "{model}", "--benchmarks", "rg:arithmetic", "--limit", "1", "--output_dir"]
DP = ["data", "preview", "--model", "{model}"]

CASES = [
    # (id, argv, text the one line must contain)
    ("sft: missing model", [*S, "--model", "{tmp}/nope", "--dataset", "{tmp}/good.jsonl"], "nope' does not exist"),
    ("sft: model is a file", [*S, "--model_id_or_path", "{tmp}/good.jsonl", "--dataset", "{tmp}/good.jsonl"],
     "is a file"),
    ("sft: model folder without config", [*S, "--model", "{tmp}/adir", "--dataset", "{tmp}/good.jsonl"],
     "adir' has no config.json"),
    ("sft: pickle-only model", [*S, "--model", "{pickled}", "--dataset", "{tmp}/good.jsonl"],
     "holds weights only as pickle (pytorch_model.bin)"),
    ("sft: missing dataset", [*SM, "--dataset", "{tmp}/absent.jsonl"], "absent.jsonl"),
    ("sft: dataset is an empty folder", [*SM, "--dataset", "{tmp}/adir"], "adir' holds no .jsonl"),
    ("sft: row without field", [*SM, "--dataset", "{tmp}/nofield.jsonl"], "nofield.jsonl:2: field 'response'"),
    ("sft: binary dataset", [*SM, "--dataset", "{tmp}/binary.jsonl"], "binary.jsonl:1: not UTF-8"),
    ("sft: non-UTF-8 dataset", [*SM, "--dataset", "{tmp}/latin1.jsonl"], "latin1.jsonl:1: not UTF-8"),
    ("sft: truncated json", [*SM, "--dataset", "{tmp}/truncated.jsonl"], "truncated.jsonl:2"),
    ("sft: empty dataset", [*SM, "--dataset", "{tmp}/empty.jsonl"], "empty.jsonl"),
    ("sft: wrong schema", [*SM, "--dataset", "{tmp}/schema.jsonl"], "schema.jsonl:1: cannot tell the row format"),
    ("sft: row not an object", [*SM, "--dataset", "{tmp}/notobj.jsonl"], "notobj.jsonl:1: row must be a JSON object"),
    ("sft: no dataset", SM, "--dataset is required"),
    ("sft: bad #N", [*SM, "--dataset", "{tmp}/good.jsonl#zero"], "good.jsonl#zero"),
    ("sft: zero batch", [*SG, "--batch_size", "0"], "--batch_size"),
    ("sft: batch not a number", [*SG, "--batch_size", "two"], "--batch_size"),
    ("sft: negative accumulation", [*SG, "--gradient_accumulation_steps", "-1"], "--gradient_accumulation_steps"),
    ("sft: zero rank", [*SG, "--lora_rank", "0"], "--lora_rank"),
    ("sft: rank not a number", [*SG, "--lora_rank", "x"], "--lora_rank"),
    ("sft: dropout 1.5", [*SG, "--lora_dropout", "1.5"], "--lora_dropout"),
    ("sft: max_steps not whole", [*SG, "--max_steps", "1.5"], "--max_steps"),
    ("sft: zero max_length", [*SG, "--max_length", "0"], "--max_length"),
    ("sft: zero save_steps", [*SG, "--save_steps", "0"], "--save_steps"),
    ("sft: zero save_total_limit", [*SG, "--save_total_limit", "0"], "--save_total_limit"),
    ("sft: zero packing_length", [*SG, "--packing_length", "0"], "--packing_length"),
    ("sft: negative lr", [*SG, "--learning_rate", "-1"], "--learning_rate"),
    ("sft: lr not a number", [*SG, "--learning_rate", "fast"], "--learning_rate"),
    ("sft: unknown dtype", [*SG, "--dtype", "int3"], "--dtype 'int3'"),
    ("sft: bool flag", [*SG, "--gradient_checkpointing", "maybe"], "--gradient_checkpointing"),
    ("sft: nan policy", [*SG, "--nan_policy", "ignore"], "--nan_policy"),
    ("sft: unknown module", [*SG, "--target_modules", "nosuchmod"], "nosuchmod"),
    ("sft: unknown flag", [*SG, "--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    ("sft: output_dir is a file", ["sft", "--model", "{model}", "--dataset", "{tmp}/good.jsonl", "--output_dir",
                                   "{tmp}/good.jsonl"], "good.jsonl' is a file"),
    ("sft: bad yaml", [*S, "--config", "{tmp}/bad.yaml", "--dataset", "{tmp}/good.jsonl"], "bad.yaml"),
    ("sft: yaml is binary", [*S, "--config", "{tmp}/binary.jsonl", "--dataset", "{tmp}/good.jsonl"], "binary.jsonl"),
    ("sft: yaml is a folder", [*S, "--config", "{tmp}/adir", "--dataset", "{tmp}/good.jsonl"], "--config"),
    ("sft: unknown yaml key", [*S, "--config", "{tmp}/unknown.yaml", "--dataset", "{tmp}/good.jsonl"], "learning_rat"),
    ("sft: 20 MB row", [*SM, "--dataset", "{tmp}/huge_row.jsonl"],
     "no training rows left: every drawn row is longer than --max_length 1024"),
    ("sft: resume without checkpoint", [*SG, "--resume_from_checkpoint", "{tmp}/nowhere"], "nowhere"),
    ("sft: resume from a file", [*SG, "--resume_from_checkpoint", "{tmp}/good.jsonl"], "not a complete checkpoint"),
    ("sft: resume from a save cut short", [*SG, "--resume_from_checkpoint", "{run}/.checkpoint-3.partial"],
     "its save was cut short"),
    ("sft: resume on another base model", [*S, "--model", "{other}", "--dataset", "{tmp}/good.jsonl",
                                           "--resume_from_checkpoint", "{ckpt}"], "model_id_or_path:"),
    ("sft: resume with other options", [*SG, "--lora_rank", "4", "--resume_from_checkpoint", "{ckpt}"],
     "lora_rank: 8 -> 4"),

    ("export: missing checkpoint", ["export", "--ckpt_dir", "{tmp}/nope"], "nope' does not exist"),
    ("export: checkpoint is a file", ["export", "--ckpt_dir", "{tmp}/good.jsonl"], "is a file"),
    ("export: not an adapter", ["export", "--ckpt_dir", "{model}"], "holds no LoRA adapter"),
    ("export: base model gone", ["export", "--ckpt_dir", "{orphan}"], "deleted-model', which does not exist"),
    ("export: base of another shape", ["export", "--ckpt_dir", "{misfit}"], "does not fit base model"),
    ("export: pickle-only adapter", ["export", "--ckpt_dir", "{pickled_adapter}"], "pickle (adapter_model.bin)"),
    ("export: output is a file", ["export", "--ckpt_dir", "{ckpt}", "--output_dir", "{tmp}/good.jsonl"], "is a file"),
    ("export: output is other data", ["export", "--ckpt_dir", "{ckpt}", "--output_dir", "{tmp}/precious"],
     "holds something other than a merged model"),
    ("export: output over the checkpoint", ["export", "--ckpt_dir", "{ckpt}", "--output_dir", "{ckpt}"], "overlaps"),
    ("export: merge_lora not a bool", ["export", "--ckpt_dir", "{ckpt}", "--merge_lora", "maybe"], "--merge_lora"),
    ("export: merge_lora false", ["export", "--ckpt_dir", "{ckpt}", "--merge_lora", "false"], "only merges"),
    ("export: unknown dtype", ["export", "--ckpt_dir", "{ckpt}", "--dtype", "int3"], "--dtype 'int3'"),
    ("export: no checkpoint", ["export"], "--ckpt_dir"),
    ("export: trust_remote_code not a bool", ["export", "--ckpt_dir", "{ckpt}", "--trust_remote_code", "maybe"],
     "--trust_remote_code: expected true or false"),

    ("infer: missing model", ["infer", "--ckpt_dir", "{tmp}/nope", "--query", "hi"], "nope' does not exist"),
    ("infer: pickle-only model", ["infer", "--ckpt_dir", "{pickled}", "--query", "hi"], "pickle (pytorch_model.bin)"),
    ("infer: base model gone", ["infer", "--ckpt_dir", "{orphan}", "--query", "hi"], "--adapter"),
    ("infer: adapter on another base", ["infer", "--ckpt_dir", "{other}", "--adapter", "{ckpt}", "--query", "hi"],
     "size mismatch"),
    ("infer: adapter folder without config", [*INF, "--adapter", "{tmp}/adir", "--query", "hi"], "adapter_config"),
    ("infer: pickle-only adapter", [*INF, "--adapter", "{pickled_adapter}", "--query", "hi"], "adapter_model.bin"),
    ("infer: missing input", [*INO, "{tmp}/absent.jsonl"], "absent.jsonl"),
    ("infer: input is a folder", [*INO, "{tmp}/adir"], "adir' does not exist or is not a file"),
    ("infer: empty input", [*INO, "{tmp}/empty.jsonl"], "empty.jsonl' holds no rows"),
    ("infer: binary input", [*INO, "{tmp}/binary.jsonl"], "binary.jsonl:1: not UTF-8"),
    ("infer: non-UTF-8 input", [*INO, "{tmp}/latin1.jsonl"], "latin1.jsonl:1: not UTF-8"),
    ("infer: truncated input", [*INO, "{tmp}/truncated.jsonl"], "truncated.jsonl:2: invalid JSON"),
    ("infer: wrong schema", [*INO, "{tmp}/schema.jsonl"], "schema.jsonl:1: field 'query' missing"),
    ("infer: row not an object", [*INO, "{tmp}/notobj.jsonl"], "notobj.jsonl:1: expected a JSON object"),
    ("infer: 20 MB line", [*INO, "{tmp}/huge.jsonl"], "huge.jsonl row 1: the prompt is 20,000,000 characters"),
    ("infer: input without output", [*INF, "--input", "{tmp}/good.jsonl"], "--input and --output go together"),
    ("infer: output is a folder", [*INF, "--input", "{tmp}/good.jsonl", "--output", "{tmp}/adir"], "is a folder"),
    ("infer: output folder missing", [*INF, "--input", "{tmp}/good.jsonl", "--output", "{tmp}/nodir/a.jsonl"],
     "nodir' does not exist"),
    ("infer: zero max_new_tokens", [*INF, "--query", "hi", "--max_new_tokens", "0"], "--max_new_tokens"),
    ("infer: max_new_tokens not a number", [*INF, "--query", "hi", "--max_new_tokens", "x"], "--max_new_tokens"),
    ("infer: zero batch", [*INF, "--query", "hi", "--batch_size", "0"], "--batch_size"),
    ("infer: negative temperature", [*INF, "--query", "hi", "--temperature", "-1"], "--temperature"),
    ("infer: top_p 0", [*INF, "--query", "hi", "--top_p", "0"], "--top_p"),
    ("infer: top_p 2", [*INF, "--query", "hi", "--top_p", "2"], "--top_p"),
    ("infer: unknown dtype", [*INF, "--query", "hi", "--dtype", "int3"], "--dtype 'int3'"),
    ("infer: unknown backend", [*INF, "--query", "hi", "--infer_backend", "vllm"], "--infer_backend"),
    ("infer: static cache for one query", [*INF, "--query", "hi", "--static_cache"], "--static_cache batches"),
    ("infer: trust_remote_code not a bool", [*INF, "--query", "hi", "--trust_remote_code", "maybe"],
     "--trust_remote_code: expected true or false"),
    ("infer: nothing to do", [*INF, "--eval_human", "false"], "nothing to do"),

    ("plot: missing run", ["plot", "{tmp}/nope"], "has no logging.jsonl"),
    ("plot: a file", ["plot", "{tmp}/good.jsonl"], "has no logging.jsonl"),
    ("plot: folder without log", ["plot", "{tmp}"], "has no logging.jsonl"),
    ("plot: truncated log", ["plot", "{tmp}/logs/truncated"], "logging.jsonl:2: invalid JSON"),
    ("plot: log without losses", ["plot", "{tmp}/logs/no-loss"], "no loss values"),
    ("plot: non-UTF-8 log", ["plot", "{tmp}/logs/latin1"], "logging.jsonl:2: not UTF-8"),
    ("plot: 20 MB line", ["plot", "{tmp}/logs/huge"], "logging.jsonl:1: invalid JSON"),
    ("plot: no run", ["plot"], "run_dir"),

    ("quickstart: rows not a number", ["quickstart", "--train_rows", "x", "--output_dir", "{tmp}/output"],
     "--train_rows"),
    ("quickstart: zero rows", ["quickstart", "--train_rows", "0", "--output_dir", "{tmp}/output"],
     "--train_rows must be a positive whole number, got 0"),
    ("quickstart: negative rows", ["quickstart", "--train_rows", "-5", "--output_dir", "{tmp}/output"],
     "--train_rows must be a positive whole number, got -5"),
    ("quickstart: output_dir is a file", ["quickstart", "--output_dir", "{tmp}/good.jsonl"], "good.jsonl' is a file"),
    ("quickstart: output_dir under a file", ["quickstart", "--output_dir", "{tmp}/good.jsonl/runs"],
     "good.jsonl' is a file, so the folder cannot be created"),
    ("quickstart: unknown flag", ["quickstart", "--fast"], "unrecognized arguments: --fast"),
    ("quickstart: unknown task", ["quickstart", "--task", "sudoku", "--output_dir", "{tmp}/output"],
     "unknown task 'sudoku'"),
    ("quickstart: eval-only split", ["quickstart", "--task", "gsm-symbolic-unseen", "--output_dir", "{tmp}/output"],
     "cannot be trained on"),

    ("data: missing file", [*DP, "{tmp}/absent.jsonl"], "absent.jsonl' does not exist"),
    ("data: binary file", [*DP, "{tmp}/binary.jsonl"], "binary.jsonl:1: not UTF-8"),
    ("data: non-UTF-8 file", ["data", "stats", "{tmp}/latin1.jsonl", "--model", "{model}"], "latin1.jsonl:1"),
    ("data: truncated json", [*DP, "{tmp}/truncated.jsonl"], "truncated.jsonl:2: invalid JSON"),
    ("data: wrong schema", [*DP, "{tmp}/schema.jsonl"], "schema.jsonl:1: cannot tell the row format"),
    ("data: empty file", [*DP, "{tmp}/empty.jsonl"], "empty.jsonl: file is empty"),
    ("data: empty folder", [*DP, "{tmp}/adir"], "adir' holds no .jsonl"),
    ("data: zero rows", [*DP, "{tmp}/good.jsonl", "-n", "0"], "-n"),
    ("data: rows not a number", [*DP, "{tmp}/good.jsonl", "-n", "x"], "-n"),
    ("data: zero ngram", ["data", "check", "--train", "{tmp}/good.jsonl", "--against", "rg:arithmetic", "--ngram",
                          "0"], "--ngram"),
    ("data: zero max_length", ["data", "stats", "{tmp}/good.jsonl", "--model", "{model}", "--max_length", "0"],
     "--max_length: must be a positive whole number"),
    ("data: drop into a folder", ["data", "check", "--train", "{tmp}/good.jsonl", "--against", "rg:arithmetic",
                                  "--drop", "{tmp}/adir"], "adir' is a folder"),
    ("data: drop under a file", ["data", "check", "--train", "{tmp}/good.jsonl", "--against", "rg:arithmetic",
                                 "--drop", "{tmp}/good.jsonl/clean.jsonl"], "good.jsonl' is a file"),
    ("data: unknown benchmark", ["data", "check", "--train", "{tmp}/good.jsonl", "--against", "nosuch"], "'nosuch'"),
    ("data: unknown action", ["data", "shuffle"], "invalid choice: 'shuffle'"),
    ("data: no action", ["data"], "choose an action"),

    ("eval: unknown benchmark", [*E, "--benchmarks", "nosuchbench"], "unknown benchmark 'nosuchbench'"),
    ("eval: no benchmarks", E, "--benchmarks is required"),
    ("eval: zero limit", [*E, "--benchmarks", "rg:arithmetic", "--limit", "0"], "--limit"),
    ("eval: limit not a number", [*E, "--benchmarks", "rg:arithmetic", "--limit", "x"], "--limit"),
    ("eval: zero samples", [*EB, "--num_samples", "0"], "--num_samples"),
    ("eval: zero batch", [*EB, "--batch_size", "0"], "--batch_size"),
    ("eval: negative temperature", [*EB, "--temperature", "-1"], "--temperature"),
    ("eval: missing model", ["eval", "--model", "{tmp}/nope", "--benchmarks", "rg:arithmetic", "--output_dir",
                             "{tmp}/eval"], "nope' does not exist"),
    ("eval: base model gone", ["eval", "--model", "{orphan}", "--benchmarks", "rg:arithmetic", "--output_dir",
                               "{tmp}/eval"], "deleted-model"),
    ("eval: output_dir is a file", [*EO, "{tmp}/good.jsonl"], "good.jsonl' is a file"),
    ("eval: output_dir under a file", [*EO, "{tmp}/good.jsonl/eval"],
     "good.jsonl' is a file, so the folder cannot be created"),
    ("eval: trust_remote_code not a bool", [*EB, "--trust_remote_code", "maybe"],
     "--trust_remote_code: expected true or false"),
    ("eval: compare non-results", ["eval", "--compare", "{tmp}/adir", "{tmp}/nope"], "summary.json is missing"),
    # found by fuzzing: values that passed the checks and failed later with a traceback
    ("sft: negative seed", [*SG, "--seed", "-1"], "--seed must be a whole number from 0 to 4294967295"),
    ("sft: huge seed", [*SG, "--seed", "99999999999999999999"], "--seed must be"),
    ("sft: nan epochs", [*SG, "--max_steps", "-1", "--num_train_epochs", "nan"], "--num_train_epochs"),
    ("sft: inf epochs", [*SG, "--num_train_epochs", "inf"], "--num_train_epochs"),
    ("sft: nan lr", [*SG, "--learning_rate", "nan"], "--learning_rate"),
    ("sft: inf lr", [*SG, "--learning_rate", "inf"], "--learning_rate"),
    ("sft: negative weight decay", [*SG, "--weight_decay", "-1"], "--weight_decay"),
    ("sft: negative grad norm", [*SG, "--max_grad_norm", "-1"], "--max_grad_norm"),
    ("sft: zero eval_limit", [*SG, "--eval_benchmarks", "rg:arithmetic", "--eval_limit", "0"], "--eval_limit"),
    ("sft: yaml number for text", [*SG, "--config", "{tmp}/dtype_number.yaml"], "option 'dtype' takes text, got 5"),
    ("sft: yaml fraction for steps", [*SG, "--config", "{tmp}/steps_fraction.yaml"],
     "option 'max_steps' takes a whole number, got 1.5"),
    ("sft: yaml number for bool", [*SG, "--config", "{tmp}/bool_number.yaml"],
     "option 'trust_remote_code' takes true or false, got 5"),
    ("sft: yaml number for list", [*SG, "--config", "{tmp}/list_number.yaml"], "option 'eval_benchmarks' takes"),
    ("sft: yaml number for path", [*SG, "--config", "{tmp}/path_number.yaml"], "option 'output_dir' takes text"),
    ("eval: nan temperature", [*EB, "--temperature", "nan"], "--temperature"),
    ("eval: negative seed", [*EB, "--seed", "-1"], "--seed must be"),
    ("eval: empty output_dir", ["eval", "--model", "{model}", "--benchmarks", "rg:arithmetic", "--output_dir", ""],
     "--output_dir is empty"),
    ("eval: compare a summary of another shape", ["eval", "--compare", "{tmp}/not-a-summary", "{tmp}/not-a-summary"],
     "not a mathtune evaluation summary"),
    ("sft: unknown module, found before evaluating", [*SG, "--eval_benchmarks", "rg:arithmetic", "--eval_limit", "1",
                                                      "--target_modules", "q_proj", "nosuchmod"],
     "--target_modules nosuchmod: no such module in this model (its linear layers: down_proj, gate_proj, k_proj"),
    ("infer: output is the input", [*INF, "--input", "{tmp}/good.jsonl", "--output", "{tmp}/good.jsonl"],
     "is the --input file"),
    ("infer: empty stop word", [*INF, "--query", "hi", "--stop_words", ""], "--stop_words"),
    ("sft: lone surrogate in a row", [*SM, "--dataset", "{tmp}/surrogate.jsonl"],
     "surrogate.jsonl:1: field 'query' holds a lone surrogate ('\\ud800' at character 3)"),
    ("infer: lone surrogate in a row", [*INO, "{tmp}/surrogate.jsonl"], "field 'query' holds a lone surrogate"),
    ("infer: lone surrogate in --query", [*INF, "--query", "caf\ud800"], "--query: holds a lone surrogate"),
    ("sft: yaml alias", [*SG, "--config", "{tmp}/alias.yaml"], "aliases (*name) are not supported"),
    ("export: base model recorded as a number", ["export", "--ckpt_dir", "{numbered}", "--merge_lora", "true"],
     "is 5, not a name or path"),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_left_behind(world, capsys, monkeypatch, argv, needle):
    tmp = world["tmp"]
    monkeypatch.chdir(tmp)  # anything written to a default place would land here, and be seen
    before = snapshot(tmp)
    code = main([a.format(**world) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert needle in err[0]
    assert err[0].startswith(f"mathtune {argv[0]}") or err[0].startswith("mathtune: error: unrecognized")
    assert snapshot(tmp) == before, "something was written, rewritten or left behind"


def test_resume_onto_a_model_of_another_shape_fails_in_one_line(world):
    from mathtune.errors import UserError
    from mathtune.model import attach_lora, load_model
    from mathtune.sft import load_weights

    model = attach_lora(load_model(world["other"], "fp32", "cpu"), 8, 32, 0.0, "all-linear")
    with pytest.raises(UserError, match=r"checkpoint-2' does not fit this model: size mismatch for .*lora_A"):
        load_weights(model, world["ckpt"], lora=True)


def test_the_20_mb_line_is_refused_fast(world, capsys):
    import time

    start = time.perf_counter()
    assert main(["infer", "--ckpt_dir", str(world["model"]), "--input", str(world["tmp"] / "huge.jsonl"),
                 "--output", str(world["tmp"] / "answers.jsonl")]) == 2
    assert time.perf_counter() - start < 20  # tokenizing it would take about a minute here
    assert not os.path.exists(world["tmp"] / "answers.jsonl")


def test_the_20_mb_row_in_training_data_is_refused_fast(world, capsys):
    import time

    start = time.perf_counter()
    assert main(["sft", "--model", str(world["model"]), "--dataset", str(world["tmp"] / "huge_row.jsonl"),
                 "--output_dir", str(world["tmp"] / "output")]) == 2
    assert time.perf_counter() - start < 20  # tokenizing it would take about 100 s
    assert "no training rows left" in capsys.readouterr().err
    assert not (world["tmp"] / "output").exists()


def test_output_paths_are_checked_before_the_slow_work(world, capsys, monkeypatch):
    """A bad --drop or --output_dir fails before benchmarks load, the data table is built or the model loads."""
    from mathtune import model, sft
    from mathtune.data import contamination, mixing

    def slow(*args, **kwargs):
        raise AssertionError("the slow work started before the output path was checked")

    monkeypatch.setattr(contamination, "benchmark_questions", slow)
    monkeypatch.setattr(model, "load_for_inference", slow)
    monkeypatch.setattr(mixing, "build_dataset", slow)
    monkeypatch.setattr(sft, "load_model", slow)
    tmp = world["tmp"]
    assert main(["data", "check", "--train", f"{tmp}/good.jsonl", "--against", "rg:arithmetic", "--drop",
                 f"{tmp}/adir"]) == 2
    assert main(["eval", "--model", str(world["model"]), "--benchmarks", "rg:arithmetic", "--output_dir",
                 f"{tmp}/good.jsonl"]) == 2
    assert main(["eval", "--model", str(world["model"]), "--benchmarks", "rg:arithmetic", "--baseline", "--adapter",
                 str(world["ckpt"]), "--output_dir", f"{tmp}/good.jsonl"]) == 2
    assert main(["sft", "--model", str(world["model"]), "--dataset", f"{tmp}/good.jsonl", "--output_dir",
                 f"{tmp}/good.jsonl/runs"]) == 2
    assert main(["quickstart", "--output_dir", f"{tmp}/good.jsonl"]) == 2
    assert [line.split(":")[0] for line in capsys.readouterr().err.splitlines()] == [
        "mathtune data", "mathtune eval", "mathtune eval", "mathtune sft", "mathtune quickstart"]


def test_data_stats_measures_a_50_mb_row_without_tokenizing_it(world, tmp_path, capsys):
    import resource
    import time

    huge = tmp_path / "huge50.jsonl"
    huge.write_text(json.dumps({"query": "7 " * 25_000_000, "response": "14"}) + "\n"
                    + json.dumps({"query": "What is 1 + 1?", "response": "2"}) + "\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    assert main(["data", "stats", str(huge), "--model", str(world["model"])]) == 0
    assert time.perf_counter() - start < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2_000_000  # KiB: under 2 GB more
    out = capsys.readouterr().out
    assert "1 row(s) of over" in out and "were not tokenized; their lengths are lower bounds" in out


def test_max_new_tokens_beyond_the_context_is_capped_with_one_line(world, capsys):
    from mathtune.infer import InferArgs, cap_new_tokens
    from mathtune.model import load_model

    model = load_model(world["model"], "fp32", "cpu")
    assert cap_new_tokens(model, InferArgs(max_new_tokens=10**9)).max_new_tokens == 512
    assert capsys.readouterr().err.strip() == ("--max_new_tokens 1,000,000,000 is beyond the model's context of 512 "
                                               "tokens; using 512")
    assert cap_new_tokens(model, InferArgs(max_new_tokens=100)).max_new_tokens == 100
    assert main(["infer", "--ckpt_dir", str(world["model"]), "--query", "hi", "--max_new_tokens", "100000"]) == 0
    assert "using 512" in capsys.readouterr().err


def test_eval_caps_max_new_tokens_at_the_context_too(world, tmp_path, capsys):
    assert main(["eval", "--model", str(world["model"]), "--benchmarks", "rg:arithmetic", "--limit", "1",
                 "--max_new_tokens", "100000", "--output_dir", str(tmp_path / "ev")]) == 0
    assert "--max_new_tokens 100,000 is beyond the model's context of 512 tokens; using 512" in capsys.readouterr().err


def test_a_second_eval_into_the_same_output_dir_is_refused(world, tmp_path, capsys):
    import fcntl

    out = tmp_path / "eval"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running eval holds (run_dir.lock_folder)
    try:
        assert main(["eval", "--model", str(world["model"]), "--benchmarks", "rg:arithmetic", "--limit", "1",
                     "--max_new_tokens", "2", "--output_dir", str(out)]) == 2
    finally:
        os.close(fd)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"mathtune eval: error: --output_dir '{out}' is in use by another mathtune process; wait for "
                       "it to end or stop it first"), err
    assert not list(out.iterdir())
    assert main(["eval", "--model", str(world["model"]), "--benchmarks", "rg:arithmetic", "--limit", "1",
                 "--max_new_tokens", "2", "--output_dir", str(out)]) == 0
    assert (out / "summary.json").is_file()
