"""Loss masks: only assistant turns and their end-of-turn token are trained."""

import pytest

from mathtune.data.tokenize import IGNORE_INDEX, encode_conversation


def trained_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])


def test_single_turn_trains_only_the_reply_and_end_of_turn(tiny_tokenizer):
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    encoded = encode_conversation(tiny_tokenizer, messages)
    assert trained_text(tiny_tokenizer, encoded) == "5<|im_end|>\n"
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert tiny_tokenizer.decode(encoded.input_ids) == rendered
    assert len(encoded.input_ids) == len(encoded.labels)


def test_multi_turn_with_system_masks_system_and_user_turns(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "How are you?"},
        {"role": "user", "content": "Solve x + 4 = 9."},
        {"role": "assistant", "content": "x = 5"},
    ]
    encoded = encode_conversation(tiny_tokenizer, messages)
    assert trained_text(tiny_tokenizer, encoded) == "How are you?<|im_end|>\nx = 5<|im_end|>\n"
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    prompt_part = tiny_tokenizer.decode([i for i, lab in pairs if lab == IGNORE_INDEX])
    assert "Be brief." in prompt_part and "Solve x + 4 = 9." in prompt_part and "x = 5" not in prompt_part
    # The system prompt given replaces the template's default one.
    assert "helpful assistant" not in tiny_tokenizer.decode(encoded.input_ids)


def test_response_only_row_trains_the_response(tiny_tokenizer):
    encoded = encode_conversation(tiny_tokenizer, [{"role": "assistant", "content": "Knights always tell the truth."}])
    assert trained_text(tiny_tokenizer, encoded) == "Knights always tell the truth.<|im_end|>\n"
    assert encoded.labels[0] == IGNORE_INDEX


def test_conversation_without_assistant_turn_is_rejected(tiny_tokenizer):
    with pytest.raises(ValueError):
        encode_conversation(tiny_tokenizer, [{"role": "user", "content": "Hello!"}])
