"""The one flag table: every verb's flags come from it, defaults come only from the config dataclasses, a mistyped
flag gets the closest names, and the checks the CLI used to make now live in the configs."""

import argparse
from dataclasses import fields

import pytest

from mathtune import flags
from mathtune.cli import VERBS, build_parser, main
from mathtune.config import SFT_FLAGS, LoraArgs, build_config
from mathtune.errors import UserError

# Every flag spelling each verb took before the table; all must keep working.
SPELLINGS = {
    "sft": "--config --model_id_or_path --model --dtype --torch_dtype --attn_impl --trust_remote_code --sft_type "
           "--train_type --lora_rank --lora_r --lora_alpha --lora_dropout --target_modules --dataset --dataset_format "
           "--columns --split_dataset_ratio --data_seed --skip_bad_rows --max_length --truncation_strategy --system "
           "--output_dir --num_train_epochs --max_steps --learning_rate --batch_size --per_device_train_batch_size "
           "--gradient_accumulation_steps --warmup_ratio --lr_scheduler_type --weight_decay --max_grad_norm --seed "
           "--logging_steps --save_steps --eval_steps --save_total_limit --gradient_checkpointing --checkpoint_layers "
           "--packing --packing_length --use_liger_kernel --use_liger --fast_lora --torch_compile --nan_policy "
           "--resume_from_checkpoint --eval_benchmarks --eval_limit --infer_backend",
    "infer": "--ckpt_dir --model_id_or_path --model --adapter --eval_human --query --input --output --system "
             "--stop_words --max_new_tokens --temperature --top_p --batch_size --static_cache --dtype --infer_backend "
             "--trust_remote_code",
    "export": "--ckpt_dir --merge_lora --output_dir --dtype --trust_remote_code",
    "quickstart": "--output_dir --train_rows --task",
    "eval": "--model --model_id_or_path --ckpt_dir --adapter --benchmarks --eval_dataset --limit --eval_limit "
            "--output_dir --num_samples --temperature --top_p --max_new_tokens --batch_size --data_seed --seed "
            "--baseline --compare --infer_backend --static_cache --trust_remote_code",
    "data": "--rows --color --model --system --dataset_format --columns --skip_bad_rows --data_seed --max_length "
            "--train --against --ngram --drop",
}


@pytest.mark.parametrize("verb", sorted(SPELLINGS))
def test_every_existing_spelling_is_still_taken(verb):
    parser = build_parser(verb)
    assert set(SPELLINGS[verb].split()) <= set(flags.option_names(parser))


def test_every_flag_of_the_table_is_used_by_some_verb():
    used = set()
    for verb in VERBS:
        parser = build_parser(verb)
        used |= set(flags.option_names(parser))
    for key, flag in flags.FLAGS.items():
        assert any(name in used for name in flag.names if name.startswith("--")) or flag.names == ("run_dir",) or \
            key == "sources", key


def test_parsers_set_no_defaults_so_only_typed_flags_override():
    for verb in ("sft", "infer", "export", "eval", "quickstart"):
        parsed = vars(build_parser(verb).parse_args([verb, *(["--ckpt_dir", "x"] if verb == "export" else [])]))
        assert set(parsed) - {"command", "func", "ckpt_dir"} == set(), verb


def test_help_shows_the_default_of_the_dataclass_field(monkeypatch, capsys):
    default = next(f for f in fields(LoraArgs) if f.name == "lora_rank")
    monkeypatch.setattr(default, "default", 12)  # the help follows the dataclass: there is no other copy
    assert main(["sft", "--help"]) == 0
    assert "--lora_rank LORA_RANK, --lora_r LORA_RANK\n                        default 12" in capsys.readouterr().out
    assert main(["infer", "--help"]) == 0
    assert "prompts per generation batch (default 16)" in capsys.readouterr().out  # InferArgs.batch_size
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "prompts per generation batch (default 32)" in out  # EvalSettings.batch_size
    assert "longest answer in tokens (default: by device" in out  # EvalSettings.max_new_tokens is None


def test_yaml_takes_every_alias_of_the_sft_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lora_r: 4\nper_device_train_batch_size: 2\ntorch_dtype: fp32\ntrain_type: full\n"
                    "attn_implementation: sdpa\nuse_liger: false\nmodel: /m\n")
    cfg = build_config(build_parser("sft").parse_args(["sft", "--config", str(path), "--lora_r", "16"]))
    assert (cfg.lora.lora_rank, cfg.optim.batch_size, cfg.model.dtype, cfg.lora.sft_type) == (16, 2, "fp32", "full")
    assert (cfg.fast.attn_impl, cfg.fast.use_liger_kernel, cfg.model.model_id_or_path) == ("sdpa", False, "/m")
    assert flags.aliases(SFT_FLAGS)["lora_r"] == "lora_rank"


@pytest.mark.parametrize(("argv", "hint"), [
    (["sft", "--datset", "x.jsonl"], "(did you mean --dataset, --data_seed or --dtype?)"),
    (["eval", "--benchmrks", "rg:arithmetic"], "did you mean --benchmarks"),
    (["data", "preview", "x.jsonl", "--colour", "never"], "did you mean --color"),
    (["infer", "--querry=hi", "--sytem", "be brief"], "(--querry: did you mean --query?; --sytem: did you mean"),
])
def test_a_mistyped_flag_gets_the_closest_names_in_one_line(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mathtune: error: unrecognized arguments: ") and hint in err[0]


def test_no_hint_when_nothing_is_close():
    assert flags.did_you_mean("unrecognized arguments: --zzzzzz", ["--dataset"]) == ""


def test_checks_live_in_the_configs():
    from mathtune.infer import InferArgs, run_infer
    from mathtune.quickstart import QuickstartArgs
    from mathtune.verbs import ExportArgs

    with pytest.raises(UserError, match="--train_rows must be a positive whole number, got 0"):
        QuickstartArgs(train_rows=0)
    with pytest.raises(UserError, match="only merges"):
        ExportArgs(ckpt_dir="x", merge_lora=False)
    with pytest.raises(UserError, match="--static_cache batches the rows of --input"):
        run_infer(None, query="hi", input_path=None, output_path=None, eval_human=None,
                  args=InferArgs(static_cache=True))


def test_typed_builds_one_config_per_section():
    from mathtune.evaluate.cli import EVAL_FLAGS, EvalJob
    from mathtune.evaluate.runner import EvalSettings

    parser = argparse.ArgumentParser()
    flags.add_flags(parser, EVAL_FLAGS)
    job, settings = flags.typed(parser.parse_args(["--benchmarks", "a", "b", "a", "--batch_size", "4"]), EVAL_FLAGS)
    assert job == EvalJob(benchmarks=("a", "b")) and settings == EvalSettings(batch_size=4)
