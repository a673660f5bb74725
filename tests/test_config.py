"""sft options: defaults, then a YAML file, then the flags typed; YAML values take their option's type."""

import pytest

from mathtune.cli import build_parser
from mathtune.config import build_config
from mathtune.errors import UserError

RUN_YAML = """\
model: /models/Yi-1.5-6B-Chat
dataset: [ruozhiba#5000, AI-ModelScope/blossom-math-v2#5000, /content/HJ_math.jsonl]
sft_type: lora
learning_rate: 1e-4
target_modules: all-linear
eval_benchmarks: champ
gradient_checkpointing: false
use_liger_kernel: "true"
lora_rank: 16
eval_limit: 50
save_total_limit: null
"""


def parse(*argv):
    return build_config(build_parser("sft").parse_args(["sft", *argv]))


def test_yaml_values_take_their_options_types_and_flags_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RUN_YAML)
    cfg = parse("--config", str(path), "--lora_rank", "32", "--max_length", "2048")
    assert cfg.model.model_id_or_path == "/models/Yi-1.5-6B-Chat"
    assert cfg.data.dataset == ("ruozhiba#5000", "AI-ModelScope/blossom-math-v2#5000", "/content/HJ_math.jsonl")
    assert cfg.optim.learning_rate == pytest.approx(1e-4)
    assert cfg.lora.target_modules == ("all-linear",)
    assert cfg.eval_benchmarks == ("champ",) and cfg.eval_limit == 50
    assert cfg.fast.gradient_checkpointing is False and cfg.fast.use_liger_kernel is True
    assert cfg.run.save_total_limit is None
    assert cfg.lora.lora_rank == 32 and cfg.data.max_length == 2048


def test_defaults_follow_swift_v2():
    cfg = parse("--dataset", "x.jsonl")
    assert (cfg.lora.lora_rank, cfg.lora.lora_alpha, cfg.lora.lora_dropout) == (8, 32, 0.05)
    assert (cfg.optim.learning_rate, cfg.optim.batch_size, cfg.optim.gradient_accumulation_steps) == (1e-4, 1, 16)
    assert cfg.optim.warmup_ratio == 0.05 and cfg.fast.gradient_checkpointing is True
    assert cfg.data.split_dataset_ratio == 0.01 and cfg.data.truncation_strategy == "delete"


def test_a_yaml_value_of_the_wrong_type_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: fast\n")
    with pytest.raises(UserError, match=r"run.yaml: option 'learning_rate' takes a number, got 'fast'"):
        parse("--config", str(path))


def test_run_dir_name_comes_from_the_hub_id_not_the_snapshot_hash(tmp_path):
    from mathtune.model import model_name

    snapshot = tmp_path / "models--01ai--Yi-1.5-6B-Chat" / "snapshots" / "3f6c0e1a9b"
    snapshot.mkdir(parents=True)
    assert model_name(snapshot, "01ai/Yi-1.5-6B-Chat") == "yi-1_5-6b-chat"
    local = tmp_path / "My.Model"
    local.mkdir()
    assert model_name(local, str(local)) == "my_model"
    assert model_name(local, None) == "my_model"


def test_checkpoint_layers_flag_and_its_bound():
    assert parse("--dataset", "x.jsonl", "--checkpoint_layers", "28").fast.checkpoint_layers == 28
    assert parse("--dataset", "x.jsonl").fast.checkpoint_layers is None
    with pytest.raises(UserError, match="--checkpoint_layers must be 0 or more"):
        parse("--dataset", "x.jsonl", "--checkpoint_layers", "-1")
