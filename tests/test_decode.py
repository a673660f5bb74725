"""mathtune.decode: the fast decoding loop gives transformers' greedy replies (prompts of several lengths, n copies of a
prompt's cache, rows ending at different steps, live rows compacted), samples reproducibly within top_p, and works on
LoRA models and eager attention; Generator takes it where it applies."""

from __future__ import annotations

import pytest
import torch

from mathtune.decode import Decoder, bucket, choose, unsupported

LENGTHS = (3, 7, 12, 5, 9, 1, 15, 4, 6)
EOS = [2, 95]  # tokens that the model below reaches at different steps in different rows (one row at its first)


def random_llama(attention: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # A large init spread: replies vary from token to token (the default gives a token repeated forever).
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, tie_word_embeddings=False, attn_implementation=attention)
    return LlamaForCausalLM(config).eval()


def prompts(lengths=LENGTHS) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, 96, (n,), generator=g).tolist() for n in lengths]


def reference(model, prompt: list[int], max_new_tokens: int, eos=EOS, **kwargs) -> list[int]:
    """transformers' greedy reply to one unpadded prompt, cut before its end-of-turn token."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=0, **kwargs)
    ids = out[0, len(prompt) :].tolist()
    return next((ids[:k] for k, t in enumerate(ids) if t in eos), ids)


def count_compactions(decoder: Decoder) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    compact = decoder._compact

    def spy(b, live, *args):
        new = compact(b, live, *args)
        seen.append((b, new))
        return new

    decoder._compact = spy
    return seen


def test_greedy_replies_are_transformers_own_as_rows_end_and_leave_the_batch():
    model = random_llama()
    want = [reference(model, p, 12) for p in prompts()]
    assert len({len(w) for w in want}) >= 4 and min(map(len, want)) == 0  # rows end at many different steps
    decoder = Decoder(model, EOS, pad_id=0)
    compactions = count_compactions(decoder)
    assert decoder.generate(prompts(), n=1, max_new_tokens=12) == want
    assert compactions and all(new < b and new & (new - 1) == 0 for b, new in compactions)  # powers of two


def test_n_samples_of_a_prompt_share_its_prefill():
    model = random_llama()
    want = [reference(model, p, 10) for p in prompts()]
    decoder = Decoder(model, EOS, pad_id=0)
    widths: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape), with_kwargs=True)
    got = decoder.generate(prompts(), n=3, max_new_tokens=10)
    assert got == [w for w in want for _ in range(3)]
    assert widths[0] == (len(LENGTHS), max(LENGTHS))  # one prefill of the 9 prompts, not of 27 rows
    assert all(w[1] == 1 for w in widths[1:])


def test_lora_model_and_eager_attention_decode_as_transformers_does(tiny_model_dir, lora_model):
    from mathtune.fastpath import attention

    peft_model = lora_model(tiny_model_dir).eval()
    eos = [5, 17]
    trained = random_llama()
    trained.set_attn_implementation(attention.register())  # as sft's fast path leaves a model it trained
    cases = [(peft_model, eos), (random_llama("eager"), EOS), (trained, EOS)]
    assert all(unsupported(model) is None for model, _ in cases)
    for model, end in cases:
        questions = [[(7 * k + j) % 300 + 3 for j in range(n)] for k, n in enumerate(LENGTHS)]
        want = [reference(model, q, 9, end) for q in questions]
        assert Decoder(model, end, pad_id=0).generate(questions, n=1, max_new_tokens=9) == want


def test_seeded_sampling_repeats_and_min_new_tokens_holds_end_of_turn_back():
    model = random_llama()
    decoder = Decoder(model, EOS, pad_id=0)

    def draw(seed, **kwargs):
        torch.manual_seed(seed)
        return decoder.generate(prompts(), n=2, max_new_tokens=12, temperature=1.0, **kwargs)

    first, again, other = draw(3), draw(3), draw(4)
    assert first == again and first != other
    assert first[0] != first[1] or first[2] != first[3]  # a prompt's samples are drawn apart
    forced = draw(3, min_new_tokens=12)
    assert all(len(r) == 12 for r in forced)  # end-of-turn is never drawn before the minimum
    near_greedy = draw(5, top_p=1e-6)  # the nucleus is the top token alone
    assert near_greedy == [reference(model, p, 12) for p in prompts() for _ in range(2)]


def test_top_p_draws_only_from_the_nucleus_in_proportion():
    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = probs.log().expand(20000, -1)
    torch.manual_seed(0)
    drawn = choose(logits, temperature=1.0, top_p=0.75)
    freq = torch.bincount(drawn, minlength=5).float() / len(drawn)
    assert freq[2:].sum() == 0  # 0.5 + 0.3 reaches 0.75: the rest is cut
    assert abs(float(freq[0]) - 0.5 / 0.8) < 0.02 and abs(float(freq[1]) - 0.3 / 0.8) < 0.02
    full = torch.bincount(choose(logits, 1.0, 1.0), minlength=5).float() / len(drawn)
    assert torch.allclose(full, probs, atol=0.015)
    assert choose(logits[:3], 0.0, 0.5).tolist() == [0, 0, 0]


def test_step_counts_and_buckets():
    model = random_llama()
    heard: list[int] = []
    replies = Decoder(model, EOS, pad_id=0).generate(prompts(), n=1, max_new_tokens=12, on_step=heard.append)
    assert sum(heard) == sum(map(len, replies)) and len(heard) == min(12, max(map(len, replies)) + 1)
    assert [bucket(r, 64) for r in (1, 2, 3, 5, 33, 64, 100)] == [1, 2, 4, 8, 64, 64, 64]


def test_generator_takes_the_fast_path_where_it_applies(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from mathtune.generate import Generator, Sampling

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    questions = [[{"role": "user", "content": q}] for q in ("What is 2 + 3?", "Solve x + 4 = 9.", "12 * 7")]
    fast, slow = Generator(model, tiny_tokenizer), Generator(model, tiny_tokenizer, fast=False)
    assert fast.fast_path_reason() is None and slow.fast_path_reason() == "fast=False"
    assert Generator(model, tiny_tokenizer, stop_words=["x"]).fast_path_reason() == "stop words"
    assert fast.generate(questions, Sampling(10), progress=False) == slow.generate(questions, Sampling(10),
                                                                                   progress=False)
    assert fast._decoder is not None and slow._decoder is None
    model.config._attn_implementation = "flash_attention_2"  # takes no 4D mask
    assert "flash_attention_2" in unsupported(model)
    model.config._attn_implementation = "sdpa"
    model.config.sliding_window = 64
    assert "sliding-window" in unsupported(model)
    model.config.sliding_window = None
    model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported(model)


def stand_in_graphs(decoder: Decoder, captured: list[tuple[int, int]]) -> None:
    """The GPU path's bookkeeping on the CPU: a stand-in graph replays the step by recomputing into the output it
    returned at capture, as a CUDA graph writes its static output."""

    class Replay:
        def __init__(self, b, used):
            self.b, self.used, self.out = b, used, decoder._run(b, used)

        def replay(self):
            self.out.copy_(decoder._run(self.b, self.used))

    def capture(b, used):
        captured.append((b, used))
        graph = Replay(b, used)
        return graph, graph.out

    decoder._capture = capture


def test_kept_buffers_and_replayed_steps_serve_later_calls():
    """Buffers are kept and grown across calls, graphs replayed where shapes repeat, live rows checked every 8
    steps."""
    model = random_llama()
    decoder = Decoder(model, EOS, pad_id=0, graphs=True)
    decoder.check_every = 8
    shapes: list[tuple[int, int]] = []
    stand_in_graphs(decoder, shapes)
    compactions = count_compactions(decoder)
    calls = [(prompts(), 1, 12), (prompts((4, 2, 6)), 2, 10), (prompts(), 3, 12)]
    per_call = []
    for questions, n, new in calls:
        want = [reference(model, q, new) for q in questions for _ in range(n)]
        assert decoder.generate(questions, n=n, max_new_tokens=new) == want
        per_call.append(shapes[:])
        shapes.clear()
    assert decoder.buffers.rows == 27 and decoder.buffers.length == 64  # grown to the largest call, then kept
    first, second, third = ([b for b, _ in call] for call in per_call)
    assert first[0] == 9 and second[0] == 6 and third[0] == 27  # each call's own batch shape
    assert not set(first) & set(second)  # the second call replays the first call's graphs where shapes repeat
    assert len(first) == len(set(first)) and len(third) == len(set(third))  # one capture per shape
    assert compactions and len(first) > 1  # rows left the batch between replays: a smaller shape was captured
    assert {used for call in per_call for _, used in call} == {64}  # these calls fit in one block of GRAPH_SLOTS


def test_a_replayed_step_reads_the_slots_written_so_far_in_blocks(monkeypatch):
    from mathtune import decode

    monkeypatch.setattr(decode, "GRAPH_SLOTS", 16)
    model = random_llama()
    decoder = Decoder(model, EOS, pad_id=0, graphs=True)
    shapes: list[tuple[int, int]] = []
    stand_in_graphs(decoder, shapes)
    want = [reference(model, q, 40, min_new_tokens=40) for q in prompts()]
    assert decoder.generate(prompts(), n=1, max_new_tokens=40, min_new_tokens=40) == want
    length = decoder.buffers.length  # 15 + 40 slots, rounded up to 64
    assert length == 64 and shapes == [(9, 16), (9, 32), (9, 48), (9, 64)]  # a graph per block of 16 slots


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_give_the_eager_replies():
    model = random_llama().cuda()
    eager = Decoder(model, EOS, pad_id=0, graphs=False).generate(prompts(), n=2, max_new_tokens=12)
    graphed = Decoder(model, EOS, pad_id=0, graphs=True)
    assert graphed.generate(prompts(), n=2, max_new_tokens=12) == eager
    assert graphed.graphs_on and graphed.graphs
    limits = [2, 12, 5, 12, 1, 12, 3, 12, 7]  # per-row limits: positions of finished rows frozen between replays
    eager = Decoder(model, EOS, pad_id=0, graphs=False).generate(prompts(), n=2, max_new_tokens=12, limits=limits)
    assert graphed.generate(prompts(), n=2, max_new_tokens=12, limits=limits) == eager


def test_each_prompt_stops_at_its_own_limit_and_never_steps_past_its_room():
    """A long prompt with little room beside a short one with much: each reply is transformers' own at its own
    limit, and no position fed to the model goes past prompt + limit (learned position embeddings would fail)."""
    model = random_llama()
    # Four rows: one finished row stays in the batch (3 live rows still fill a bucket of 4), stepping on with them.
    batch = prompts((15, 1, 3, 9))
    limits = [2, 12, 12, 10]
    eos = [1]  # a token these rows do not reach early: each runs to its limit
    want = [reference(model, p, m, eos=eos) for p, m in zip(batch, limits, strict=True)]
    assert [len(w) for w in want] == limits
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _, args, kw: seen.append(int(kw["position_ids"].max())), with_kwargs=True)
    got = Decoder(model, eos, pad_id=0).generate(batch, n=2, max_new_tokens=12, limits=limits)
    assert got == [w for w in want for _ in range(2)]
    assert max(seen) <= max(len(p) + m - 1 for p, m in zip(batch, limits, strict=True))
    with pytest.raises(ValueError, match="limits"):
        Decoder(model, eos, pad_id=0).generate(batch, n=1, max_new_tokens=4, limits=limits)


class Listener:
    """A row hook that records what it hears and stops rows once they hold `stop_after[row]` tokens."""

    def __init__(self, stop_after: dict[int, int] | None = None) -> None:
        self.heard: dict[int, list[int]] = {}
        self.ended: list[int] = []
        self.calls = 0
        self.stop_after = stop_after or {}

    def __call__(self, new: dict[int, list[int]], ended: set[int]) -> list[int]:
        self.calls += 1
        assert not set(new) & set(self.ended)  # a row is reported up to the call that says it ended, no further
        assert ended <= set(new)
        for row, ids in new.items():
            self.heard.setdefault(row, []).extend(ids)
        self.ended += sorted(ended)
        return [row for row, size in self.stop_after.items() if len(self.heard.get(row, [])) >= size]


@pytest.mark.parametrize("every", [1, 3, 8])
def test_row_hook_hears_each_reply_as_it_grows_and_changes_no_reply(every):
    """Greedy and sampled, n > 1, per-prompt limits, rows leaving the batch mid-way, syncs every 1, 3 or 8 steps:
    the replies are those of a call without the hook, and the hook heard each one whole, by its own row."""
    model = random_llama()
    limits = [12, 3, 12, 7, 12, 1, 12, 12, 5]
    for n, temperature, lim in ((1, 0.0, None), (3, 1.0, None), (2, 1.0, limits)):
        decoder = Decoder(model, EOS, pad_id=0)
        decoder.check_every = every
        compactions = count_compactions(decoder)
        torch.manual_seed(7)
        plain = decoder.generate(prompts(), n=n, max_new_tokens=12, temperature=temperature, limits=lim)
        listener = Listener()
        torch.manual_seed(7)
        hooked = decoder.generate(prompts(), n=n, max_new_tokens=12, temperature=temperature, limits=lim,
                                  on_rows=listener)
        assert hooked == plain
        if n != 3:  # rows left the batch, so bucket positions and result rows differed
            assert compactions
        assert [listener.heard[row] for row in range(len(plain))] == plain
        assert sorted(listener.ended) == list(range(len(plain)))  # every row ended, once
        if every == 1:
            assert listener.calls >= max(map(len, plain))  # heard step by step


def test_a_row_the_hook_stops_ends_there_leaves_the_batch_and_the_others_run_on():
    model = random_llama()
    run = {"n": 1, "max_new_tokens": 12, "min_new_tokens": 12}  # no end-of-turn: every row would run 12 tokens
    want = Decoder(model, EOS, pad_id=0).generate(prompts(), **run)
    assert all(len(w) == 12 for w in want)
    decoder = Decoder(model, EOS, pad_id=0)
    sizes: list[int] = []
    model.model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    stop_after = {row: 2 for row in range(1, 9)} | {0: 4}  # rows 1..8 at 2 tokens, row 0 at 4: it runs on alone
    listener = Listener(stop_after)
    got = decoder.generate(prompts(), on_rows=listener, **run)
    assert got[0] == want[0][:4] and all(got[r] == want[r][:2] for r in range(1, 9))
    assert listener.ended == []  # stopped rows are not reported as ended: the hook ended them itself
    assert sizes == [9, 9, 1, 1]  # the prefill, a step of all rows, then the survivor alone, until it was stopped
    # One row stopped while the others go on: theirs are unchanged.
    got = Decoder(model, EOS, pad_id=0).generate(prompts(), on_rows=Listener({4: 5}), **run)
    assert got[4] == want[4][:5] and got[:4] + got[5:] == want[:4] + want[5:]


@pytest.mark.parametrize("graphs", [False, True])
def test_ctrl_c_in_the_middle_of_the_loop_leaves_the_decoder_usable(graphs):
    model = random_llama()
    want = [reference(model, p, 12) for p in prompts()]
    decoder = Decoder(model, EOS, pad_id=0, graphs=graphs)
    if graphs:  # kept buffers and replayed steps: the state a Ctrl-C could leave half-way matters most here
        stand_in_graphs(decoder, [])
        decoder.check_every = 2
    calls = [0]

    def ctrl_c(new, ended):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return []

    with pytest.raises(KeyboardInterrupt):
        decoder.generate(prompts(), n=3, max_new_tokens=12, on_rows=ctrl_c)
    assert decoder.generate(prompts(), n=1, max_new_tokens=12) == want
    assert decoder.generate(prompts((4, 2)), n=2, max_new_tokens=12) == [
        reference(model, p, 12) for p in prompts((4, 2)) for _ in range(2)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_row_hook_on_cuda_graphs_changes_no_reply_and_stops_rows():
    model = random_llama().cuda()
    decoder = Decoder(model, EOS, pad_id=0, graphs=True)  # check_every 8, as on any GPU
    plain = decoder.generate(prompts(), n=2, max_new_tokens=40)
    listener = Listener()
    assert decoder.generate(prompts(), n=2, max_new_tokens=40, on_rows=listener) == plain
    assert [listener.heard[row] for row in range(len(plain))] == plain and decoder.graphs_on and decoder.graphs
    run = {"n": 1, "max_new_tokens": 40, "min_new_tokens": 40}
    full = decoder.generate(prompts(), **run)
    got = decoder.generate(prompts(), on_rows=Listener({3: 10}), **run)
    assert got[3] == full[3][:16]  # heard at the second sync (16 tokens), stopped there
    # The others run on to 40 (equal to `full` before the stop; after it a smaller batch may flip a near-tie here).
    assert all(len(g) == 40 and g[:16] == f[:16] for r, (g, f) in enumerate(zip(got, full, strict=True)) if r != 3)
