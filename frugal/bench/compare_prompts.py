"""The prompts `frugal bench compare` sends (pure layer).

Plain English-like filler words (trace.FILLER, content-free): a number of words, or about a
number of bytes for the long-prompt workload (the Gateway API Inference Extension measured
its endpoint picker with 220 KB prompts, its issue #2928). With `sensitive`, each prompt
also carries a few values the default content policy finds, spread through the text (an
email address, a phone number, a card number that passes the Luhn check), so the prompt
checks have something to redact and not only text to scan.
"""

from __future__ import annotations

from frugal.bench.trace import FILLER, filler_prompt

# What the default policy's detectors find in them: EMAIL, PHONE, CREDIT_CARD.
SENSITIVE_PHRASES = (
    "write to jane.doe@example.com about it",
    "or call +1 (415) 555-2671 today",
    "and charge card 4111 1111 1111 1111 for it",
)
_MEAN_WORD_BYTES = sum(len(word) + 1 for word in FILLER) / len(FILLER)


def words_for_bytes(prompt_bytes: int) -> int:
    """Filler words that make about `prompt_bytes` bytes (at least one word)."""
    return max(1, round(prompt_bytes / _MEAN_WORD_BYTES))


def build_prompt(words: int, *, sensitive: bool = False) -> str:
    """`words` filler words; with `sensitive`, SENSITIVE_PHRASES placed at even intervals
    (after a quarter, half and three quarters of the words)."""
    text = filler_prompt(words).split(" ")
    if not sensitive:
        return " ".join(text)
    pieces: list[str] = []
    step = len(text) / (len(SENSITIVE_PHRASES) + 1)
    start = 0
    for index, phrase in enumerate(SENSITIVE_PHRASES, start=1):
        cut = round(step * index)
        pieces += [*text[start:cut], phrase]
        start = cut
    return " ".join([*pieces, *text[start:]])


def describe_prompt(words: int, prompt_bytes: int | None, *, sensitive: bool) -> str:
    size = f"~{prompt_bytes:,}-byte" if prompt_bytes is not None else f"{words}-word"
    values = " with an email, a phone and a card number in each" if sensitive else ""
    return f"{size} prompt{values}"
