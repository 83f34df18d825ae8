"""A deterministic whitespace tokenizer (core layer, pure).

Each token is a run of whitespace followed by a run of non-whitespace, so joining the tokens
gives back the text exactly and token counts are stable; trailing whitespace is one more token.
It stands in for a model tokenizer when counting usage for the simulator.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*\S+|\s+\Z")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))
