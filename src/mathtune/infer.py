"""`mathtune infer`: chat with a base model, an adapter checkpoint or a merged folder.

Modes: an interactive REPL that streams tokens and keeps history (the default on a terminal; Ctrl-C stops an answer,
Ctrl-C at the prompt leaves), one `--query`, or `--input FILE.jsonl --output FILE.jsonl` answered in batches. All
three go through `generate.Generator`.
"""

from __future__ import annotations

import math
import os
import select
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic import write_jsonl
from .data.formats import prompt_messages
from .data.tokenize import char_limit
from .errors import UserError
from .generate import Generator, Sampling
from .jsonl import read_jsonl


@dataclass(frozen=True)
class InferArgs:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop_words: tuple[str, ...] = ()
    system: str | None = None
    batch_size: int = 16
    static_cache: bool = False  # --input: a static KV cache and a compiled decoding step (GPU)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("--max_new_tokens and --batch_size must be positive")
        if not (math.isfinite(self.temperature) and self.temperature >= 0 and 0 < self.top_p <= 1):  # nan, inf
            raise UserError(
                f"--temperature must be >= 0 and --top_p in (0, 1], got {self.temperature} and {self.top_p}")
        if any(not word for word in self.stop_words):
            raise UserError("--stop_words: an empty stop word would end every answer at once")

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.max_new_tokens, self.temperature, self.top_p)


@dataclass(frozen=True)
class InferJob:
    """What `mathtune infer` answers with and what it answers: `run_infer`'s other arguments, as typed flags."""

    model: str | None = None  # a model folder, adapter checkpoint or merged folder; None: the embedded model
    adapter: str | None = None
    query: str | None = None
    input: str | None = None
    output: str | None = None
    eval_human: bool | None = None  # None: chat when neither --query nor --input is given
    dtype: str = "AUTO"
    trust_remote_code: bool = False
    infer_backend: str = "pt"  # accepted for SWIFT users; PyTorch is the only backend here


STOPPED = "\n(stopped; the partial answer stays in the history, /clear forgets it; Ctrl-C at the prompt leaves)\n"


def _start(system: str | None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] if system else []


def _printer(out) -> Callable[[str], None]:
    def show(text: str) -> None:
        out.write(text)
        out.flush()

    return show


def repl(generator: Generator, args: InferArgs, stdin=None, out=None) -> list[dict[str, str]]:
    """Read a question per line and stream the answer; returns the conversation when the user leaves.

    /clear forgets the history; /exit, end of input or Ctrl-C at the prompt leaves. Ctrl-C while an answer is being
    written stops that answer and comes back to the prompt: the answer so far stays in the history (it was shown,
    and the next question may refer to it), unless nothing had been shown, when the question goes too.
    """
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if hasattr(stdin, "reconfigure"):
        stdin.reconfigure(errors="replace")  # bytes that are not UTF-8 become U+FFFD, not a crash in the tokenizer
    out.write("mathtune chat: /clear to forget the history, /exit or Ctrl-C to leave; "
              "Ctrl-C during an answer stops it.\n")
    messages = _start(args.system)
    while True:
        try:
            out.write("<<< ")
            out.flush()
            line = read_line(stdin)
        except KeyboardInterrupt:  # at the prompt: the user wants out, which is no failure
            out.write("\n")
            return messages
        if not line:
            out.write("\n")
            return messages
        query = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
        if query in ("/exit", "exit", "/quit"):
            return messages
        if query in ("/clear", "clear"):
            messages = _start(args.system)
            out.write("(history cleared)\n")
            continue
        if not query:
            continue
        messages.append({"role": "user", "content": query})
        reply = generator.stream(messages, args.sampling, _printer(out))
        if reply.interrupted:
            out.write(STOPPED)
            if not reply.text:
                messages.pop()
                continue
        else:
            out.write("\n")
        messages.append({"role": "assistant", "content": reply.text})


def read_line(stdin) -> str:
    """One line from `stdin`; on a terminal, Ctrl-C while waiting for it raises KeyboardInterrupt without fail.

    Python runs a signal's handler between bytecodes. A Ctrl-C that lands after the last such check and before the
    blocking read() starts (a window of microseconds, hit when the key comes just as the prompt is shown), or one that
    the kernel hands to another thread (torch's and the tokenizer's), leaves read() waiting for a line while the
    KeyboardInterrupt is pending: the chat would not leave. So the wait is done in short select() slices that come
    back to Python, where the pending Ctrl-C is raised; the line is read once select says one is there.
    """
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and the like: nothing blocks
        return stdin.readline()
    if os.isatty(fd):
        while not select.select([fd], [], [], 0.1)[0]:
            pass
    return stdin.readline()


def _read_queries(path: Path) -> list[tuple[dict, list[dict[str, str]]]]:
    """Rows of an input jsonl in any training shape, the answer optional (data.formats.prompt_messages)."""
    if not path.is_file():
        raise UserError(f"--input '{path}' does not exist or is not a file")
    rows = [(row, list(prompt_messages(row, str(path), number))) for number, row in read_jsonl(path)]
    if not rows:
        raise UserError(f"--input '{path}' holds no rows")
    return rows


def check_prompt_lengths(model, tokenizer, conversations, where: str) -> None:
    """Refuse a prompt that cannot fit the model's context before tokenizing it: tokenizing a 20 MB line alone takes
    a minute, and generating from it would exhaust memory. A token covers at most as many characters as the longest
    vocabulary entry, so characters / that length is a lower bound on the prompt's tokens."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not context:
        return
    limit = char_limit(tokenizer, context)
    for number, messages in enumerate(conversations, start=1):
        chars = sum(len(m["content"]) for m in messages)
        if chars > limit:
            label = where if len(conversations) == 1 and where == "--query" else f"{where} row {number}"
            raise UserError(f"{label}: the prompt is {chars:,} characters, far beyond the model's context of "
                            f"{context:,} tokens")


def check_text(text: str, where: str) -> None:
    """Refuse a lone surrogate (from bytes that were not UTF-8, or a JSON "\\ud800"): no tokenizer can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(f"{where}: holds a lone surrogate ({text[exc.start]!r} at character {exc.start}), which is "
                        "not text; pass UTF-8") from None


def cap_new_tokens(model, args: InferArgs) -> InferArgs:
    """--max_new_tokens no larger than the model's context: beyond it generation runs on until killed."""
    from .generate import within_context

    capped = within_context(model, args.max_new_tokens)
    return args if capped == args.max_new_tokens else replace(args, max_new_tokens=capped)


def check_output(target: str, source: str | None = None) -> None:
    """Fail before the model loads, not after the answers are generated; never write over the input."""
    out = Path(target)
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise UserError(f"--output '{target}' is the --input file; answers go to another file")
    if out.is_dir():
        raise UserError(f"--output '{target}' is a folder; pass a file name")
    if not out.parent.is_dir():
        raise UserError(f"--output '{target}': folder '{out.parent}' does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--output '{target}': folder '{out.parent}' is not writable")


def answer_file(generator: Generator, source: str, target: str, args: InferArgs, progress: bool = True,
                rows: list | None = None) -> int:
    """Answer every row of `source` into `target` (each row plus "response"); written aside, then renamed."""
    rows = rows if rows is not None else _read_queries(Path(source))
    conversations = [(_start(args.system) if args.system and m[0]["role"] != "system" else []) + m for _, m in rows]
    replies = generator.generate(conversations, args.sampling, batch_size=args.batch_size, progress=progress,
                                 static_cache=args.static_cache)
    write_jsonl(target, ({**row, "response": reply[0]} for (row, _), reply in zip(rows, replies, strict=True)))
    return len(rows)


def answer_once(generator: Generator, query: str, args: InferArgs, out=None) -> str:
    """Stream the answer to one question; Ctrl-C ends the command (exit 130), as for any one-shot command."""
    out = out or sys.stdout
    reply = generator.stream(_start(args.system) + [{"role": "user", "content": query}], args.sampling,
                             _printer(out))
    out.write("\n")
    if reply.interrupted:
        raise KeyboardInterrupt
    return reply.text


def run_infer(ckpt_dir: str | None, *, query: str | None, input_path: str | None, output_path: str | None,
              eval_human: bool | None, args: InferArgs, dtype: str = "AUTO", adapter: str | None = None,
              stdin=None, stdout=None, trust_remote_code: bool = False) -> int:
    from .model import load_for_inference

    if args.static_cache and input_path is None:
        raise UserError("--static_cache batches the rows of --input; --query and chat answer one prompt at a time")
    if (input_path is None) != (output_path is None):
        raise UserError("--input and --output go together")
    rows = None
    if input_path is not None:  # every row and the output folder are checked before the model loads
        rows = _read_queries(Path(input_path))
        check_output(output_path, input_path)
    elif query is None and eval_human is False:
        raise UserError("nothing to do: pass --query, --input/--output, or --eval_human true")
    if query is not None:
        check_text(query, "--query")
    model, tokenizer, description = load_for_inference(ckpt_dir, adapter=adapter, dtype=dtype,
                                                      trust_remote_code=trust_remote_code)
    args = cap_new_tokens(model, args)
    if query is not None:
        check_prompt_lengths(model, tokenizer, [_start(args.system) + [{"role": "user", "content": query}]], "--query")
    if rows is not None:
        check_prompt_lengths(model, tokenizer, [m for _, m in rows], input_path)
    print(f"model: {description}", file=sys.stderr)
    generator = Generator(model, tokenizer, args.stop_words)
    if query is not None:
        answer_once(generator, query, args, stdout)
    elif input_path is not None:
        count = answer_file(generator, input_path, output_path, args, rows=rows)
        print(f"answered {count} rows into {output_path}", file=sys.stderr)
    else:
        repl(generator, args, stdin, stdout)
    return 0

