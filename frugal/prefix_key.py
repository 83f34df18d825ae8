"""The key a request's prompt prefix is routed by (shared, pure).

Prefix-aware routing (a model's `prefix_routing`) sends requests whose prompts start
alike to the same replica, whose engine then finds that prefix in its KV cache. The
safety filter's request processor names the prefix: a hash of the prompt's first
`KEY_BLOCKS` blocks of `BLOCK_CHARS` characters (`safety_filter.prefix_block_chars`), as
an unsigned 64-bit number, in the
`x-frugal-prefix` header (frugal.wire.PREFIX_HEADER). Envoy hashes on that header inside
the group (Maglev with bounded loads) and takes it as the random value of its weighted
clusters, so the same prefix also picks the same group while the weights stand. A prompt
shorter than one block has no key: there is no prefix worth keeping.

The unit is characters, not tokens: the gateway has no tokenizer, and the key only has
to be equal for equal prefixes. 2,048 characters is about 512 tokens, the block of
Mooncake's traces; three blocks skip past a system prompt that nearly every request
shares (frugal bench routing-virtual, "prefix").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

BLOCK_CHARS = 2048
KEY_BLOCKS = 3


def prefix_key(parts: Iterable[str], block_chars: int = BLOCK_CHARS) -> int | None:
    """The key of a prompt given as its text parts in order (roles and contents), or None
    when the prompt has less than one whole block."""
    text = "\0".join(parts)
    whole = len(text) // block_chars
    if whole == 0:
        return None
    leading = text[: min(whole, KEY_BLOCKS) * block_chars]
    digest = hashlib.blake2b(leading.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
