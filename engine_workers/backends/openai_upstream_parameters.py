"""Parameters of the `openai` backend: one OpenAI-compatible engine server as upstream
(backend layer, pure: pydantic only, so `frugal up` can validate profiles without aiohttp).

A replica group's profile in frugal.yaml is validated into `OpenAIUpstreamParameters`, e.g.
`{base_url: "http://127.0.0.1:8000/v1", upstream_model: "Qwen/Qwen3-8B"}`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _http_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field}: must be an http(s) URL with a host, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{field}: must not have a query or fragment")
    return value.rstrip("/")


class OpenAIUpstreamParameters(BaseModel):
    """Where the upstream engine server is and how to talk to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The API root, under which chat/completions and completions live.
    base_url: str
    # The model name sent upstream; None: the worker's served model name.
    upstream_model: str | None = Field(default=None, min_length=1)
    # The name of an environment variable holding the upstream's API key (sent as Bearer).
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Longest wait for the next chunk, the first one (prefill, queueing) included.
    read_timeout_s: float = Field(default=120.0, gt=0)
    # HTTP/1.1 carries one stream per connection: this caps the requests in flight upstream.
    max_connections: int = Field(default=512, ge=1)
    # Prometheus text endpoint; None: base_url's origin + /metrics (vLLM, SGLang). trtllm-serve
    # serves it at /prometheus/metrics, a Frugal worker on its own metrics port.
    metrics_url: str | None = None
    metrics_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        return _http_url(value, "base_url")

    @field_validator("metrics_url")
    @classmethod
    def _valid_metrics_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "metrics_url")

    @property
    def effective_metrics_url(self) -> str:
        if self.metrics_url is not None:
            return self.metrics_url
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}/metrics"
