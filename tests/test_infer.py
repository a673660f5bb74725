"""`mathtune infer`: one question, a file of questions, and the chat (REPL) with its Ctrl-C handling, on tiny models
through the CLI, in process and through a pseudo-terminal."""

import errno
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from mathtune import infer
from mathtune.cli import main
from mathtune.errors import UserError
from mathtune.generate import Generator

PAIRS = [("What is 2 + 3?", "5"), ("Hello!", "Hello! Observation: done")]


@pytest.fixture(scope="module")
def parrot_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fully fine-tuned to give two fixed replies, so stopping behaviour is observable.

    A plain loop over the two rows: what is tested here is inference, whatever the trainer's interface is."""
    from mathtune.data.tokenize import IGNORE_INDEX, encode_conversation
    from mathtune.model import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, "fp32", "cpu")
    rows = [encode_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": r}])
            for q, r in PAIRS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r.input_ids + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([r.labels + [IGNORE_INDEX] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(60):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    root = tmp_path_factory.mktemp("parrot")
    model.save_pretrained(root / "parrot")
    tokenizer.save_pretrained(root / "parrot")
    return root / "parrot"


def test_infer_query_stops_at_end_of_turn(parrot_dir, capsys):
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--query", "What is 2 + 3?", "--max_new_tokens", "40"]) == 0
    assert capsys.readouterr().out == "5\n"


def test_infer_stops_at_stop_word(parrot_dir, capsys):
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--query", "Hello!", "--stop_words", "Observation:",
                 "--infer_backend", "pt"]) == 0
    assert capsys.readouterr().out == "Hello! Observation:\n"


@pytest.mark.parametrize("extra", [[], ["--static_cache", "--batch_size", "1"]])
def test_infer_batch_file(parrot_dir, tmp_path, extra):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"query": "What is 2 + 3?"}) + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "Hello!"}]}) + "\n")
    target = tmp_path / "out.jsonl"
    assert main(["infer", "--ckpt_dir", str(parrot_dir), "--input", str(source), "--output", str(target),
                 "--stop_words", "Observation:", *extra]) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["response"] for r in rows] == ["5", "Hello! Observation:"]


def _read_until(fd: int, needle: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.time() + timeout
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            raise AssertionError(f"timed out waiting for {needle!r}; got {seen!r}")
        seen += os.read(fd, 4096)
    return seen


def test_repl_through_a_pseudo_terminal(parrot_dir):
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mathtune.cli", "infer", "--ckpt_dir", str(parrot_dir)],
                               stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(slave)
    try:
        _read_until(master, b"<<< ")
        os.write(master, b"What is 2 + 3?\n")
        assert b"5\r\n" in _read_until(master, b"<<< ")
        os.write(master, b"/clear\n")
        assert b"history cleared" in _read_until(master, b"<<< ")
        os.write(master, b"/exit\n")
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(master)


def test_chat_reads_a_line_that_is_not_utf8(tiny):
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe what is 2 + 3?\n/exit\n"), encoding="utf-8")
    out = io.StringIO()
    infer.repl(Generator(*tiny), infer.InferArgs(max_new_tokens=3), stdin=stdin, out=out)
    assert out.getvalue().count("<<< ") == 2  # answered the first line, then left at /exit


class _FixedAnswers:
    """A generator that answers "x" to everything: what is tested is the file, not the answers."""

    def generate(self, conversations, sampling, **kwargs):
        return [["x"] for _ in conversations]


def test_answers_file_is_complete_or_untouched(tmp_path, monkeypatch):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"query": "1 + 1?"}) + "\n" + json.dumps({"query": "2 + 2?"}) + "\n")
    target.write_text("earlier answers\n")
    settings = infer.InferArgs()

    def failing_replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(infer.os, "replace", failing_replace)
        with pytest.raises(UserError, match="No space left on device"):
            infer.answer_file(_FixedAnswers(), str(source), str(target), settings, progress=False)
    assert target.read_text() == "earlier answers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    assert infer.answer_file(_FixedAnswers(), str(source), str(target), settings, progress=False) == 2
    assert [json.loads(line)["response"] for line in target.read_text().splitlines()] == ["x", "x"]


def _ctrl_c_at_step(model, step: int, times: int = 1) -> list[int]:
    """Raise KeyboardInterrupt, as a Ctrl-C would, at the model's `step`-th forward call of the next `times` replies
    (step 1 is the prompt); returns the list of forward calls seen, one per step."""
    calls: list[int] = []
    left = [times]

    def hook(module, args, kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        if left[0] and len(calls) == step:
            left[0] -= 1
            calls.clear()
            raise KeyboardInterrupt

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def test_stream_returns_the_text_shown_when_ctrl_c_stops_it(tiny):
    model, tokenizer = tiny
    generator = Generator(model, tokenizer)
    question = [{"role": "user", "content": "What is 2 + 3?"}]
    sampling = infer.InferArgs(max_new_tokens=40).sampling
    full = generator.stream(question, sampling)
    assert not full.interrupted and len(full.text) > 10
    _ctrl_c_at_step(model, 30)
    shown: list[str] = []
    partial = generator.stream(question, sampling, shown.append)
    assert partial.interrupted and partial.text == "".join(shown)
    assert partial.text and full.text.startswith(partial.text) and partial.text != full.text


def test_ctrl_c_during_an_answer_keeps_the_history_and_returns_to_the_prompt(tiny):
    model, tokenizer = tiny
    generator = Generator(model, tokenizer)
    args = infer.InferArgs(max_new_tokens=40)
    full = generator.stream([{"role": "user", "content": "What is 2 + 3?"}], args.sampling).text
    prompts: list[int] = []
    _ctrl_c_at_step(model, 30)

    def record_prompt(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:  # a prompt, not one new token
            prompts.append(kwargs["input_ids"].shape[1])

    model.register_forward_pre_hook(record_prompt, with_kwargs=True)
    out = io.StringIO()
    history = infer.repl(generator, args, stdin=io.StringIO("What is 2 + 3?\nHello!\n/exit\n"), out=out)
    partial = history[1]["content"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert partial and full.startswith(partial) and partial != full  # the answer as far as it had come
    assert out.getvalue().count("<<< ") == 3 and out.getvalue().count("(stopped") == 1
    assert f"{partial}\n(stopped" in out.getvalue()
    # The second question is asked with the first exchange, the partial answer included, in front of it.
    expected = generator.render([history[:3]])[0]
    assert prompts[-1] == len(expected)


def test_ctrl_c_before_any_text_drops_the_question(tiny):
    model, tokenizer = tiny
    _ctrl_c_at_step(model, 1)  # while reading the prompt: nothing shown yet
    history = infer.repl(Generator(model, tokenizer), infer.InferArgs(max_new_tokens=5),
                         stdin=io.StringIO("What is 2 + 3?\nHello!\n"), out=io.StringIO())
    assert [m["content"] for m in history if m["role"] == "user"] == ["Hello!"]


def test_ctrl_c_during_a_one_shot_answer_ends_the_command(tiny):
    model, tokenizer = tiny
    _ctrl_c_at_step(model, 10)
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):  # the CLI turns it into exit 130
        infer.answer_once(Generator(model, tokenizer), "What is 2 + 3?", infer.InferArgs(max_new_tokens=40), out)
    assert out.getvalue().endswith("\n") and len(out.getvalue()) > 1  # what was shown stays, the line ended


@pytest.fixture
def chatty_dir(tmp_path, tiny_model_dir):
    """The tiny model with room for a long answer (a long context): one that Ctrl-C can catch half-way."""
    import shutil

    target = tmp_path / "chatty"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["max_position_embeddings"] = 65536
    (target / "config.json").write_text(json.dumps(config))
    return target


def _spawn_chat(model_dir, *flags: str) -> tuple[int, int]:
    """`python -m mathtune infer` on a pseudo-terminal that is its controlling terminal, so that a typed Ctrl-C
    (byte 0x03) reaches it as SIGINT, as in a shell. Returns (pid, terminal fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        # A shell's background job starts with SIGINT ignored, and an ignored signal stays ignored across exec (Python
        # then installs no KeyboardInterrupt): give the chat the disposition a terminal's foreground process has.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-m", "mathtune", "infer", "--ckpt_dir", str(model_dir), *flags])
    return pid, fd


def _exit_code(pid: int, fd: int, timeout: float = 90) -> int:
    """The child's exit code; meanwhile its terminal output is read, as a real terminal does (a child whose output
    nobody reads blocks on a full terminal buffer and never exits)."""
    shown = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                shown = (shown + os.read(fd, 4096))[-2000:]
            except OSError:  # the child closed its side of the terminal
                time.sleep(0.05)
    raise AssertionError(f"the chat did not exit; its last output: {shown!r}")


def test_ctrl_c_that_does_not_interrupt_the_read_still_leaves_the_prompt():
    """A Ctrl-C whose handler runs while the prompt's read() is already blocked (here: delivered to another thread,
    as when it lands just before read() starts) must still leave the chat, not wait for the next line."""
    import threading

    master, slave = os.openpty()
    stdin = open(slave, encoding="utf-8", closefd=True)

    def ctrl_c_elsewhere_then_a_line():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # Python's handler runs; main's read() goes on
        time.sleep(5)
        os.write(master, b"late line\n")  # what a blocked read would return instead

    helper = threading.Thread(target=ctrl_c_elsewhere_then_a_line, daemon=True)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest may run as a background job
    try:
        started = time.monotonic()
        helper.start()
        out = io.StringIO()
        history = infer.repl(None, infer.InferArgs(), stdin=stdin, out=out)
        assert time.monotonic() - started < 3  # left on the Ctrl-C, not on the late line
        assert [m for m in history if m["role"] == "user"] == []
        assert out.getvalue().endswith("<<< \n")
    finally:
        helper.join()
        signal.signal(signal.SIGINT, inherited)
        stdin.close()
        os.close(master)


def test_ctrl_c_in_the_chat_through_a_pseudo_terminal(chatty_dir):
    pid, fd = _spawn_chat(chatty_dir, "--max_new_tokens", "30000")
    try:
        _read_until(fd, b"<<< ")
        os.write(fd, b"What is 2 + 3?\n")
        _read_until(fd, b"\r\n")  # the terminal's echo of the question
        _read_until(fd, b" ", timeout=60)  # the answer is being written: some text has come
        os.write(fd, b"\x03")  # Ctrl-C
        seen = _read_until(fd, b"<<< ", timeout=60)
        assert b"(stopped" in seen  # the answer stopped, the chat goes on
        os.write(fd, b"Hello!\n")
        _read_until(fd, b"\r\n")
        _read_until(fd, b" ", timeout=60)
        os.write(fd, b"\x03")
        assert b"(stopped" in _read_until(fd, b"<<< ", timeout=60)  # history and all, the chat is still there
        os.write(fd, b"\x03")  # Ctrl-C at the prompt leaves
        assert _exit_code(pid, fd) == 0
        pid = 0
    finally:
        if pid:  # still running after a failed assertion
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
