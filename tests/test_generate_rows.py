"""mathtune.generate's row hook and streaming on the fast decoding loop: rows named by conversation and sample on
both paths (the loop and transformers' generate), rows stopped where the hook says, `stream` giving the same text in
the same pieces on both paths, stop words (shown and generated up to the first, on both paths), and pieces that never
split a character or a word."""

from __future__ import annotations

import pytest

from mathtune.generate import Generator, Sampling, TextPieces

QUESTIONS = [[{"role": "user", "content": q}] for q in
             ("What is 2 + 3?", "Solve x + 4 = 9.", "Hello! How are you? The quick brown fox jumps.", "12 * 7")]


class Rows:
    """Records each row's tokens by name; stops the rows of `stop_after` once they hold that many tokens."""

    def __init__(self, stop_after: dict[int, int] | None = None) -> None:
        self.heard: dict[int, list[int]] = {}
        self.ended: set[int] = set()
        self.stop_after = stop_after or {}

    def __call__(self, new: dict[int, list[int]], ended: set[int]) -> list[int]:
        assert not set(new) & self.ended
        for row, ids in new.items():
            self.heard.setdefault(row, []).extend(ids)
        self.ended |= ended
        return [row for row, size in self.stop_after.items() if len(self.heard.get(row, [])) >= size]


@pytest.mark.parametrize("fast", [True, False])
def test_row_hook_names_rows_by_conversation_and_sample_and_stops_them(tiny, fast):
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, fast=fast)
    sampling = Sampling(8, temperature=1.0, n=2, seed=3)
    limits = [8, 3, 8, 5]
    run = {"batch_size": 3, "progress": False, "limits": limits}  # two batches, longest prompt first
    plain = generator.generate_ids(QUESTIONS, sampling, **run)
    rows = Rows()
    assert generator.generate_ids(QUESTIONS, sampling, on_rows=rows, **run) == plain
    assert {row: ids for row, ids in rows.heard.items()} == {c * 2 + s: plain[c][s] for c in range(4) for s in (0, 1)}
    assert rows.ended == set(range(8))
    stopper = Rows({2 * 2 + 1: 2})  # the second sample of the third conversation, after 2 tokens
    stopped = generator.generate_ids(QUESTIONS, sampling, on_rows=stopper, **run)
    assert stopped[2][1] == plain[2][1][:2] and len(plain[2][1]) > 2 and stopper.heard[5] == stopped[2][1]
    # Greedy, the other rows run on unchanged (sampled, their draws follow the batch's shape, which a stop changes).
    greedy = generator.generate_ids(QUESTIONS, Sampling(8), **run)
    cut = generator.generate_ids(QUESTIONS, Sampling(8), on_rows=Rows({2: 3}), **run)
    assert cut[2][0] == greedy[2][0][:3] and len(greedy[2][0]) > 3
    assert cut[:2] + cut[3:] == greedy[:2] + greedy[3:]
    assert (generator._decoder is not None) == fast


def test_both_paths_hear_the_same_greedy_rows(tiny):
    model, tokenizer = tiny
    heard = []
    for fast in (True, False):
        rows = Rows()
        Generator(model, tokenizer, fast=fast).generate_ids(QUESTIONS, Sampling(10), batch_size=2, progress=False,
                                                            on_rows=rows, limits=[10, 4, 10, 7])
        heard.append(rows.heard)
    assert heard[0] == heard[1] and [len(heard[0][r]) for r in range(4)] == [10, 4, 10, 7]


def test_stream_runs_on_the_fast_loop_with_transformers_text_and_pieces(tiny):
    model, tokenizer = tiny
    question = QUESTIONS[0]
    fast, slow = Generator(model, tokenizer), Generator(model, tokenizer, fast=False)
    assert fast.fast_path_reason(streaming=True) is None
    shown: list[list[str]] = [[], []]
    replies = [g.stream(question, Sampling(30), pieces.append) for g, pieces in zip((fast, slow), shown, strict=True)]
    assert replies[0] == replies[1] and not replies[0].interrupted and len(replies[0].text) > 10
    assert shown[0] == shown[1] and "".join(shown[0]) == replies[0].text and len(shown[0]) > 1
    assert fast._decoder is not None and slow._decoder is None  # the loop served it


def test_stream_ends_at_a_stop_word_on_the_fast_loop(tiny):
    model, tokenizer = tiny
    question = QUESTIONS[1]
    full = Generator(model, tokenizer).stream(question, Sampling(40)).text
    # A stop word first seen well into the reply (this random model repeats itself a lot).
    at = next(i for i in range(8, len(full) - 2) if full.find(full[i : i + 2]) == i and "\ufffd" not in full[i : i + 2])
    word = full[at : at + 2]
    steps: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: steps.append(1), with_kwargs=True)
    generator = Generator(model, tokenizer, stop_words=[word])
    assert generator.fast_path_reason() == "stop words" and generator.fast_path_reason(streaming=True) is None
    shown: list[str] = []
    reply = generator.stream(question, Sampling(40), shown.append)
    expected = full[: full.index(word) + len(word)]
    assert reply.text == "".join(shown) == expected  # the stop word kept, as SWIFT keeps it
    assert len(steps) < 40 and generator._decoder is not None  # it stopped there, on the loop
    steps.clear()
    assert Generator(model, tokenizer, stop_words=[word], fast=False).stream(question, Sampling(40)).text == expected


def test_text_pieces_never_split_a_character_or_a_word(tiny_tokenizer):
    text = "Knights é über 12*7=84. Done\nNext ü"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    halves = [t for t in ids if tiny_tokenizer.decode([t]) == "\ufffd"]
    assert len(halves) >= 4  # é, ü: each character's bytes come in two tokens
    pieces: list[str] = []
    stream = TextPieces(tiny_tokenizer, (), pieces.append)
    for token in ids:
        assert not stream.add([token], end=False)
    stream.add([], end=True)
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert "é" in pieces and "*7=84. " in pieces  # a character whole; symbols wait for the space after them
    pieces.clear()
    stopping = TextPieces(tiny_tokenizer, ("4. D",), pieces.append)
    told = [stopping.add([token], end=False) for token in ids]
    assert told.index(True) == ids.index(tiny_tokenizer.encode("D", add_special_tokens=False)[0])
    assert "".join(pieces) == text[: text.index("4. D") + 4]


@pytest.mark.parametrize("fast", [True, False])
def test_ctrl_c_in_a_stream_keeps_what_was_shown_and_the_generator_ready(tiny, fast):
    """On the fast loop (its decoder's buffers as Ctrl-C left them) and on transformers' generate alike."""
    model, tokenizer = tiny
    generator = Generator(model, tokenizer, fast=fast)
    full = generator.stream(QUESTIONS[2], Sampling(30))
    calls = [0]

    def ctrl_c_at_step_12(module, args, kwargs):
        calls[0] += 1
        if calls[0] == 12:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(ctrl_c_at_step_12, with_kwargs=True)
    shown: list[str] = []
    partial = generator.stream(QUESTIONS[2], Sampling(30), shown.append)
    handle.remove()
    assert partial.interrupted and partial.text == "".join(shown) and full.text.startswith(partial.text)
    assert 0 < len(partial.text) < len(full.text)
    assert generator.stream(QUESTIONS[2], Sampling(30)) == full
    assert generator.generate([QUESTIONS[0], QUESTIONS[2]], Sampling(30), progress=False)[1] == [full.text]
    assert (generator._decoder is not None) is fast


@pytest.mark.parametrize("question", QUESTIONS)
def test_stream_on_transformers_generate_shows_the_fast_loops_pieces(tiny, question):
    model, tokenizer = tiny
    fast, slow = Generator(model, tokenizer), Generator(model, tokenizer, fast=False)
    assert slow.fast_path_reason(streaming=True) == "fast=False"
    shown: list[list[str]] = [[], []]
    replies = [g.stream(question, Sampling(40), pieces.append) for g, pieces in zip((fast, slow), shown, strict=True)]
    assert replies[0] == replies[1] and "".join(shown[1]) == replies[1].text and len(replies[1].text) > 10
    assert shown[0] == shown[1] and len(shown[1]) > 1  # one mechanism (TextPieces) cuts both paths' text
    assert fast._decoder is not None and slow._decoder is None


def test_stream_on_transformers_generate_stops_at_a_stop_word_and_shows_nothing_past_it(tiny):
    model, tokenizer = tiny
    question = QUESTIONS[2]
    (ids,), = Generator(model, tokenizer).generate_ids([question], Sampling(40), progress=False)
    full = tokenizer.decode(ids, skip_special_tokens=True)
    ends = {len(tokenizer.decode(ids[:k], skip_special_tokens=True)) for k in range(len(ids) + 1)}
    # A stop word first seen well into the reply that ends inside a token: the text of that token past the stop
    # word must not be shown.
    at = next(i for i in range(8, len(full) - 2) if full.find(full[i : i + 2]) == i and i + 2 not in ends
              and "\ufffd" not in full[i : i + 2])
    word = full[at : at + 2]
    expected = full[: at + 2]
    steps: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: steps.append(1), with_kwargs=True)
    shown: list[list[str]] = [[], []]
    for fast, pieces in zip((True, False), shown, strict=True):
        steps.clear()
        generator = Generator(model, tokenizer, stop_words=[word], fast=fast)
        assert generator.stream(question, Sampling(40), pieces.append).text == "".join(pieces) == expected
        assert len(steps) < 40  # generation stopped at the stop word too
    assert shown[0] == shown[1] and generator._decoder is None
