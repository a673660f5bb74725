"""Find where GRPO's gradient goes non-finite on the GPU: grpo_gain.py's GRPO settings from the base model (600
questions, the default --nan_policy stop), each step's grad norm printed; on a failing step it saves the batch and
the LoRA weights to $OUT and re-runs each micro-batch under autograd's anomaly detection. Ran on 2026-12-03 (code at
48218f2) from the repository root as `timeout 270 python3 docs/results/grpo/h200_20261203/grpo_base_rerun.py`, with
the embedded model installed as for grpo_gain.py; log: grpo_base_rerun.log (no step failed in 37)."""

import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, "docs/results/grpo")
sys.path.insert(0, "docs/results/recipe_sweep")
import grpo_gain as gg  # noqa: E402

import mathtune.rl.grpo as grpo_mod  # noqa: E402
import mathtune.rl.step as step_mod  # noqa: E402
from mathtune.cli import build_parser  # noqa: E402
from mathtune.rl.cli import config_from  # noqa: E402
from mathtune.rl.loss import policy_loss  # noqa: E402
from mathtune.rl.rollout import collate, packs, policy_logps  # noqa: E402

OUT = Path(os.environ["OUT"])
T0 = time.time()
ORIGINAL_STEP = step_mod.take_step


def report(model, batch, params) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    bad = [names.get(id(p)) for p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    print("non-finite grads:", len(bad), "of", len(params), bad[:12], flush=True)
    r = batch.rollout
    lengths = [len(c) for c in r.completion_ids]
    print("completion lengths", min(lengths), max(lengths), "prompt lengths", min(map(len, r.prompt_ids)),
          max(map(len, r.prompt_ids)), "truncated", sum(r.truncated), flush=True)
    torch.save(batch.to_saved(), OUT / "bad_batch.pt")
    torch.save({n: p.detach().to(torch.bfloat16).cpu() for n, p in model.named_parameters() if p.requires_grad},
               OUT / "lora_at_fail.pt")


def replay_with_anomaly_detection(model, batch, cfg, tokenizer) -> None:
    g, r = cfg.grpo, batch.rollout
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    tokens = sum(len(c) for c in r.completion_ids)
    for k, rows in enumerate(step_mod.micro_batches(len(r.texts), cfg.optim.batch_size)):
        micro = collate(r, rows, pad, device, packs(model))
        with torch.autograd.detect_anomaly(check_nan=True):
            try:
                logps = policy_logps(model, micro, g.temperature)
                out = policy_loss(logps, None, None, batch.advantages[rows].to(device), micro.completion_mask,
                                  loss_type=g.loss_type, epsilon_low=g.epsilon, epsilon_high=g.epsilon_upper,
                                  beta=g.beta, max_completion_length=g.max_completion_length,
                                  accumulation_steps=1, batch_tokens=tokens)
                out.loss.backward()
                print(f"micro {k}: backward ok", flush=True)
            except RuntimeError:
                print(f"micro {k} anomaly:\n" + traceback.format_exc()[-6000:], flush=True)


def take_step(model, batch, params, optimizer, cfg, tokenizer, step):
    try:
        record = ORIGINAL_STEP(model, batch, params, optimizer, cfg, tokenizer, step)
    except Exception as exc:
        print(f"FAILED at step {step}: {exc}", flush=True)
        report(model, batch, params)
        optimizer.zero_grad(set_to_none=True)
        replay_with_anomaly_detection(model, batch, cfg, tokenizer)
        raise
    print(f"[{time.time() - T0:.0f}s] step {step} ok grad_norm {record.get('grad_norm')} "
          f"len {record.get('completion_length')} acc {record.get('accuracy')}", flush=True)
    return record


def main() -> None:
    args = gg.parse_args(["--out", "/tmp/diag/x.jsonl", "--work", "/tmp/diag"])
    questions = Path("/tmp/diag/q.jsonl")
    gg.write_questions(questions, 6000, 600)
    argv = gg.grpo_argv(args, None, Path("/tmp/diag/run"), questions)
    at = argv.index("--nan_policy")
    del argv[at : at + 2]  # stop at the first non-finite step
    cfg = config_from(build_parser("rlhf").parse_args(argv))
    grpo_mod.take_step = take_step
    result = grpo_mod.run_grpo(cfg, progress=False)
    print("finished without failure", result.last_checkpoint)


if __name__ == "__main__":
    main()
