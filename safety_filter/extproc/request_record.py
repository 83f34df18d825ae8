"""What one inference request did, as the request processor saw it: times, tokens, outcome.

Pure layer. The processor stamps a `RequestRecord` at three moments: the request
headers; the first response bytes (a stream's response headers, which Envoy's
transcoder releases with the worker's first message, or a unary answer's body); the
end of the response. It fills in what the engine reported (x-frugal-* trailers or
headers, usage in a body). The record derives TTFT, TPOT and end-to-end time for the
gateway metrics (`first_token` says when a stream's first token came), and the
`frugal.request` dynamic metadata that Envoy's access log reads. Every label value
it gives is bounded: a served model or UNKNOWN_MODEL, an HTTP status, an error
reason from fixed codes.
"""

from __future__ import annotations

from dataclasses import dataclass

# The model label of a request refused before its model was known to be served:
# client-chosen names never become label values.
UNKNOWN_MODEL = "unknown"
# Error reasons besides the OpenAI error codes a client receives.
OUTPUT_BLOCKED = "output_blocked"
# The ext_proc stream ended before the response did. A replica that dies mid-stream
# looks the same from here: Envoy resets the downstream stream (test_replica_failure).
CLIENT_DISCONNECTED = "client_disconnected"
# The status of a request whose response never started (nginx's "client closed request").
CLOSED_BEFORE_RESPONSE = 499


@dataclass
class RequestRecord:
    started: float  # time.perf_counter() when the request headers arrived
    key_id: str | None = None
    tenant: str | None = None
    model: str = UNKNOWN_MODEL
    stream: bool = False
    status: int = 0
    first_text: float | None = None
    ended: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    engine_ms: float | None = None
    engine_ttft_ms: float | None = None
    error: str | None = None

    def first_token(self) -> float | None:
        """When the first token reached the gateway. A stream's first message is a
        `: keep-alive` comment when its first token takes longer than the keep-alive
        interval (engine_workers/first_token_wait.py), so once the engine has reported its
        times, a stream's first token came at its end less the engine's time from its
        first token to its last (durations on the engine's clock: no clocks compared).
        Without them (its client left first) it is the headers' time: the first token's
        when that came before the first comment, else a lower bound."""
        if not self.stream or self.first_text is None or self.ended is None:
            return self.first_text
        if self.engine_ms is None or self.engine_ttft_ms is None:
            return self.first_text
        decode_s = (self.engine_ms - self.engine_ttft_ms) / 1000.0
        # The headers came with the first message, never after the first token.
        return max(self.first_text, self.ended - decode_s)

    def ttft_s(self) -> float | None:
        first = self.first_token()
        return None if first is None else first - self.started

    def e2e_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def tpot_s(self) -> float | None:
        """Time per output token after the first: streams only (a unary answer arrives
        whole, so the gateway cannot see its tokens apart)."""
        tokens, first = self.completion_tokens, self.first_token()
        if not self.stream or first is None or self.ended is None:
            return None
        if tokens is None or tokens < 2:
            return None
        return (self.ended - first) / (tokens - 1)

    def metadata(self) -> dict[str, str | float]:
        """The access log's view of the request; what is unknown is left out."""
        ttft = self.ttft_s()
        fields: dict[str, str | float | None] = {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": None if ttft is None else round(ttft * 1000.0, 3),
            "engine_ms": self.engine_ms,
            "engine_ttft_ms": self.engine_ttft_ms,
            "error": self.error,
        }
        return {key: value for key, value in fields.items() if value is not None}

    def engine_reported(self, engine_ms: float | None, engine_ttft_ms: float | None) -> None:
        """Keep what the engine reported; a later report without a value keeps the earlier."""
        self.engine_ms = self.engine_ms if engine_ms is None else engine_ms
        self.engine_ttft_ms = self.engine_ttft_ms if engine_ttft_ms is None else engine_ttft_ms
