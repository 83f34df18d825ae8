"""The `sim` engine's prefix cache (backend layer, pure: no asyncio, no clock).

Engines keep the KV cache of prompt blocks they have computed and reuse it for a later
prompt that starts with the same blocks (vLLM's automatic prefix caching, SGLang's radix
cache). Modelled as a least-recently-used set of fixed-size blocks, each named by an id
that stands for its tokens and everything before them (Mooncake's `hash_ids`, or a chained
hash of the tokens), bounded by the blocks that fit in the replica's KV budget. Only a
prompt's leading run of cached blocks is a hit: a block's keys and values depend on every
token before it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    """Least-recently-used prompt blocks, at most `capacity_blocks` of them."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError(f"capacity_blocks must not be negative: {capacity_blocks}")
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.queried_blocks = 0
        self.hit_blocks = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def admit(self, blocks: Sequence[int]) -> int:
        """The prompt's leading blocks found cached; then all of its blocks are the most
        recently used, and the least recently used past the capacity are dropped."""
        hits = 0
        while hits < len(blocks) and blocks[hits] in self._blocks:
            hits += 1
        self.queried_blocks += len(blocks)
        self.hit_blocks += hits
        for block in blocks:
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
        return hits


def prompt_blocks(tokens: Sequence[str], block_tokens: int) -> tuple[int, ...]:
    """Ids of a prompt's whole blocks of `block_tokens` tokens, each a hash of its tokens
    and of the id before it, so equal ids mean equal prefixes (a partial last block is
    not cached, as in vLLM). Stable across processes (no per-process hash seed)."""
    ids: list[int] = []
    previous = b""
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        digest = hashlib.blake2b(previous, digest_size=8)
        for token in tokens[start : start + block_tokens]:
            digest.update(token.encode() + b"\0")
        previous = digest.digest()
        ids.append(int.from_bytes(previous, "big"))
    return tuple(ids)
