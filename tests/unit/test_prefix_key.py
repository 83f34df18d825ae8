"""The prompt-prefix key the request processor sets for prefix-aware routing."""

from __future__ import annotations

from frugal.prefix_key import BLOCK_CHARS, KEY_BLOCKS, prefix_key
from safety_filter.extproc.prompt_check import prompt_parts


def test_equal_leading_blocks_give_equal_keys_whatever_follows() -> None:
    lead = "s" * (BLOCK_CHARS * KEY_BLOCKS)
    assert prefix_key([lead, "turn one"]) == prefix_key([lead, "turn two, longer"])
    assert prefix_key([lead]) != prefix_key(["t" + lead[1:]])


def test_a_prompt_shorter_than_a_block_has_no_key() -> None:
    assert prefix_key(["x" * (BLOCK_CHARS - 1)]) is None
    assert prefix_key(["x" * BLOCK_CHARS]) is not None


def test_the_key_is_a_64_bit_unsigned_number() -> None:
    key = prefix_key(["y" * BLOCK_CHARS])
    assert key is not None and 0 <= key < 2**64


def test_the_prompt_parts_are_the_roles_and_texts_in_order() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image"}]},
        ]
    }
    assert list(prompt_parts(chat)) == ["system", "be brief", "user", "hi"]
    assert list(prompt_parts({"prompt": ["a", 3, "b"]})) == ["a", "b"]
    assert list(prompt_parts({"messages": ["not a message"]})) == []
