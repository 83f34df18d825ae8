"""One streamed chat completion through the gateway, timed chunk by chunk (benchmark support)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class TimedStream:
    start: float  # perf_counter when the request was sent
    arrivals: list[float]  # perf_counter of each event that carried content
    last_event: str  # the last `data: ...` line, "data: [DONE]" for a clean end


async def timed_chat_stream(
    client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int
) -> TimedStream:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    arrivals: list[float] = []
    last = ""
    start = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    arrivals.append(time.perf_counter())
            if line.startswith("data: "):
                last = line
    return TimedStream(start, arrivals, last)
