"""Replay rows: the base model's own replies to everyday prompts, mixed into a fine-tune so that it stays a chat model.

A short fine-tune on one task's "The answer is \\boxed{A}." replies teaches a small model to answer *everything*
that way: after the quickstart's number-sequence run, SmolLM2-135M answered "What is the capital of France?" with
"The answer is: France." (docs/results.md, "Quickstart (CPU)"). Training on the base model's own greedy replies to
other prompts (self-distillation, rehearsal) costs a few seconds of generation and a few percent more training
tokens, and teaches the difference: the task's prompts get the task's format, other prompts the old behaviour.
The prompts ship with the package (`data/replay_prompts.txt`) and share none with the quickstart's chat check.
"""

from __future__ import annotations

from pathlib import Path

PROMPTS_FILE = Path(__file__).parent / "data" / "replay_prompts.txt"
MAX_NEW_TOKENS = 96
"""Replies that have not ended by then are dropped: a cut-off reply would teach the model to stop mid-sentence."""


def replay_prompts() -> list[str]:
    return [line.strip() for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_replay_rows(model, tokenizer, path: Path, progress: bool = True) -> int:
    """Answer every replay prompt with `model` (greedy) and write the finished replies as chat rows to `path`
    (`{"messages": [...]}` jsonl); returns how many rows were written."""
    from .atomic import write_jsonl
    from .generate import Generator, Sampling

    prompts = replay_prompts()
    generator = Generator(model, tokenizer)
    conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
    replies = generator.generate_ids(conversations, Sampling(max_new_tokens=MAX_NEW_TOKENS),
                                     batch_size=len(prompts), progress=progress)
    rows = [{"messages": [{"role": "user", "content": prompt},
                          {"role": "assistant", "content": generator.decode(ids[0]).strip()}]}
            for prompt, ids in zip(prompts, replies, strict=True)
            if len(ids[0]) < MAX_NEW_TOKENS and generator.decode(ids[0]).strip()]
    write_jsonl(path, rows)
    return len(rows)
