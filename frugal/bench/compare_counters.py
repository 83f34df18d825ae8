"""What a Frugal stack did for a level: CPU per process kind, Python and Redis round trips,
tokens the engines counted (pure layer: parsing and arithmetic over readings).

Readings come from compare_probe.py (I/O): /proc/PID/stat of each child, Envoy's admin
/stats, Redis `INFO stats commandstats`, the engines' Prometheus text. A `StackReading` is
one moment; the difference of two is what happened between them.

Python round trips are Envoy's waits for the safety filter: one per ext_authz check and per
rate limit service call (their decisions: ok, denied or over_limit, error,
failure_mode_allowed, from Envoy's counters) and one per turn of the request processor (its
own `frugal_extproc_turns_total`: Envoy sends a request's headers and body chunks without
waiting, and they are answered in one turn). The messages Envoy sent are counted too
(`ext_proc.stream_msgs_sent`). Redis round trips are the client
reads Redis processed (`total_reads_processed`: a pipeline or a script is one); Redis
commands are as commandstats counts them (each command of a pipeline, and each call a
script makes, counts), without the INFO calls that take the readings.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

# The supervisor's child names: `safety_filter`, `safety_filter/1`, ..., `envoy`, ...
PROCESS_KINDS = ("safety_filter", "envoy", "control_plane", "redis")
PYTHON_CALLS = ("ext_authz", "ratelimit", "ext_proc")
# A filter's counters sit under `http.<listener prefix>.<filter>.`, with the filter's own
# stat_prefix, if it has one, next; the rate limit filter's under its route's cluster.
_DECISION = r"(ok|denied|over_limit|error|failure_mode_allowed)$"
_ENVOY_COUNTERS = {
    "ext_authz": re.compile(r"^http\.[^.]+\.ext_authz\.([^.]+\.)?" + _DECISION),
    "ratelimit": re.compile(r"^cluster\..+\.ratelimit\." + _DECISION),
    "ext_proc": re.compile(r"^http\.[^.]+\.ext_proc\.([^.]+\.)?stream_msgs_sent$"),
}
# Requests Envoy's routers started towards an engine (one cluster per replica group).
_ENGINE_REQUESTS = re.compile(r"^cluster\.engine__[^.]+\.upstream_rq_total$")
# /stats?filter= : only what the readings need, so a reading stays cheap for Envoy.
ENVOY_STATS_FILTER = (
    r"(\.ext_authz\..*" + _DECISION + r")|(\.ratelimit\." + _DECISION + r")"
    r"|(\.ext_proc\..*stream_msgs_sent$)|(^cluster\.engine__.*\.upstream_rq_total$)"
)
# Attempts Envoy gave up on because a replica sent no response headers within
# streams.first_byte_timeout_s, and the retries it made (control_plane/translate/routes.py).
_ENGINE_ATTEMPTS = re.compile(
    r"^cluster\.engine__[^.]+\.(upstream_rq_per_try_timeout|upstream_rq_retry)$"
)
ENGINE_ATTEMPTS_FILTER = r"^cluster\.engine__.*\.(upstream_rq_per_try_timeout|upstream_rq_retry)$"
GENERATION_TOKENS = "frugal_engine_generation_tokens"
UNANSWERED_TOKENS = "frugal_engine_unanswered_tokens"
# The safety filter's count of its answers to Envoy, by side (safety_filter/extproc):
# messages Envoy sends without waiting (the request's headers and body chunks) are
# answered together, in one turn, so a turn is one wait of Envoy's for Python.
EXTPROC_TURNS = "frugal_extproc_turns"
PROMPT_TOKENS = "frugal_engine_prompt_tokens"


@dataclass(frozen=True)
class EngineAttempts:
    """Envoy's abandoned and retried attempts towards the engines, summed over groups."""

    per_try_timeouts: int = 0
    retries: int = 0

    def __sub__(self, other: EngineAttempts) -> EngineAttempts:
        return EngineAttempts(
            self.per_try_timeouts - other.per_try_timeouts, self.retries - other.retries
        )


def engine_attempts(stats_text: str) -> EngineAttempts:
    """The per-try timeouts and retries in Envoy's admin /stats text."""
    counts = {"upstream_rq_per_try_timeout": 0, "upstream_rq_retry": 0}
    for line in stats_text.splitlines():
        name, _, value = line.partition(": ")
        found = _ENGINE_ATTEMPTS.match(name)
        if found and value.strip().isdigit():
            counts[found.group(1)] += int(value)
    return EngineAttempts(counts["upstream_rq_per_try_timeout"], counts["upstream_rq_retry"])


def process_kind(child_name: str) -> str:
    """The kind of a supervisor child: its name up to the first `/`."""
    return child_name.split("/", 1)[0]


def cpu_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) from a /proc/PID/stat line. The command name (field 2)
    is in parentheses and may hold spaces or parentheses: fields are counted after the
    last `)`; utime and stime are fields 14 and 15 (proc(5))."""
    fields = stat_line.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class EnvoyCounts:
    python: dict[str, int]  # PYTHON_CALLS -> messages
    engine_requests: int

    def __sub__(self, other: EnvoyCounts) -> EnvoyCounts:
        return EnvoyCounts(
            {k: self.python.get(k, 0) - other.python.get(k, 0) for k in PYTHON_CALLS},
            self.engine_requests - other.engine_requests,
        )

    @property
    def python_total(self) -> int:
        return sum(self.python.values())


def envoy_counts(stats_text: str) -> EnvoyCounts:
    """Envoy's admin /stats text (`name: value` lines); counters it lacks count 0 (a filter
    the config does not have)."""
    python = dict.fromkeys(PYTHON_CALLS, 0)
    engine_requests = 0
    for line in stats_text.splitlines():
        name, _, value = line.partition(": ")
        if not value.strip().isdigit():
            continue
        if _ENGINE_REQUESTS.match(name):
            engine_requests += int(value)
            continue
        for call, pattern in _ENVOY_COUNTERS.items():
            if pattern.match(name):
                python[call] += int(value)
    return EnvoyCounts(python, engine_requests)


@dataclass(frozen=True)
class RedisCounts:
    commands: int
    round_trips: int

    def __sub__(self, other: RedisCounts) -> RedisCounts:
        return RedisCounts(self.commands - other.commands, self.round_trips - other.round_trips)


def redis_counts(info: Mapping[str, object]) -> RedisCounts:
    """From redis-py's parsed `INFO stats commandstats` (cmdstat_<name>: {calls: n, ...}).
    The INFO calls that take the readings are left out of the commands; of the round
    trips, a difference of two readings holds exactly one of them (see `without_reading`)."""
    commands = 0
    for name, value in info.items():
        if name.startswith("cmdstat_") and not name.startswith("cmdstat_info"):
            if isinstance(value, Mapping):
                commands += int(value.get("calls", 0))
    reads = info.get("total_reads_processed", 0)
    return RedisCounts(commands, int(reads) if isinstance(reads, int | str) else 0)


def without_reading(delta: RedisCounts) -> RedisCounts:
    """A difference of two readings less the later reading's own INFO round trip (Redis
    counts a read before it answers, so the earlier one's is in the earlier reading)."""
    return RedisCounts(delta.commands, max(0, delta.round_trips - 1))


@dataclass(frozen=True)
class StackReading:
    cpu_ticks: dict[str, int]  # PROCESS_KINDS -> utime + stime of its processes
    processes: dict[str, int]  # PROCESS_KINDS -> how many
    envoy: EnvoyCounts
    redis: RedisCounts | None  # None: the stack has no Redis to read (or it did not answer)
    at_s: float = 0.0  # when it was taken (time.monotonic)


def idle_rates(before: StackReading, after: StackReading) -> dict[str, float]:
    """Clock ticks per second each kind spends with no request under way (the control
    plane's balancer loop, gRPC's timers), from two readings of an idle stack."""
    seconds = after.at_s - before.at_s
    if seconds <= 0:
        return {}
    return {
        k: max(0, after.cpu_ticks.get(k, 0) - before.cpu_ticks.get(k, 0)) / seconds
        for k in after.cpu_ticks
    }


@dataclass(frozen=True)
class LevelUsage:
    """Per request (and per streamed token for CPU) over one level; what is not known is
    left out."""

    processes: dict[str, int] = field(default_factory=dict)
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    cpu_us_per_token: dict[str, float] = field(default_factory=dict)
    python_per_request: dict[str, float] = field(default_factory=dict)
    redis_commands_per_request: float | None = None
    redis_round_trips_per_request: float | None = None

    def as_record(self) -> dict[str, object]:
        return {
            "processes": self.processes,
            "cpu_us_per_request": self.cpu_us_per_request,
            "cpu_us_per_token": self.cpu_us_per_token,
            "python_messages_per_request": self.python_per_request,
            "redis_commands_per_request": self.redis_commands_per_request,
            "redis_round_trips_per_request": self.redis_round_trips_per_request,
        }


def level_usage(
    before: StackReading,
    after: StackReading,
    *,
    requests: int,
    tokens: int,
    ticks_per_s: int,
    idle: Mapping[str, float] | None = None,
) -> LevelUsage:
    """What the stack spent between two readings, per request of the level (and per token
    it streamed, for CPU), less what it spends idle (`idle`: ticks per second, from
    `idle_rates`) over the same time. /proc counts whole clock ticks (10 ms at 100 Hz), so
    a level's CPU figure is good to about +-1 tick / requests."""
    if requests <= 0:
        return LevelUsage(processes=dict(after.processes))
    us_per_tick = 1e6 / ticks_per_s
    seconds = max(0.0, after.at_s - before.at_s)
    spent = {}
    for kind in after.cpu_ticks:
        ticks = after.cpu_ticks[kind] - before.cpu_ticks.get(kind, 0)
        busy = ticks - (idle or {}).get(kind, 0.0) * seconds
        spent[kind] = max(0.0, busy) * us_per_tick
    envoy = after.envoy - before.envoy
    python = {k: round(v / requests, 3) for k, v in envoy.python.items()}
    python["total"] = round(envoy.python_total / requests, 3)
    redis = None
    if after.redis is not None and before.redis is not None:
        redis = without_reading(after.redis - before.redis)
    return LevelUsage(
        processes=dict(after.processes),
        cpu_us_per_request={k: round(v / requests, 1) for k, v in spent.items()},
        cpu_us_per_token={k: round(v / tokens, 2) for k, v in spent.items()} if tokens else {},
        python_per_request=python,
        redis_commands_per_request=None if redis is None else round(redis.commands / requests, 3),
        redis_round_trips_per_request=(
            None if redis is None else round(redis.round_trips / requests, 3)
        ),
    )


@dataclass(frozen=True)
class EngineTokens:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def __sub__(self, other: EngineTokens) -> EngineTokens:
        return EngineTokens(self.prompt - other.prompt, self.completion - other.completion)


def engine_tokens(metrics_texts: Iterable[str]) -> EngineTokens:
    """The tokens the engines counted for the requests they answered: prompt tokens
    admitted and tokens generated (engine_workers/metrics.py:
    `frugal_engine_prompt_tokens_total`, `frugal_engine_generation_tokens_total`) less
    those of requests that ended before a worker sent a message of the answer
    (`frugal_engine_unanswered_tokens_total`: an attempt Envoy retried elsewhere, a
    failure before the first byte; the gateway bills neither), summed over the engines'
    Prometheus texts. With no client leaving before its first byte (the gateway bills
    that from the replica's count), this is what the usage ledger must hold."""
    counted = dict.fromkeys((PROMPT_TOKENS, GENERATION_TOKENS), 0.0)
    unanswered = dict.fromkeys(("prompt", "generation"), 0.0)
    for text in metrics_texts:
        for family in text_string_to_metric_families(text):
            totals = [s for s in family.samples if s.name.endswith("_total")]
            if family.name in counted:
                counted[family.name] += sum(s.value for s in totals)
            elif family.name == UNANSWERED_TOKENS:
                for sample in totals:
                    unanswered[sample.labels["kind"]] += sample.value
    return EngineTokens(
        round(counted[PROMPT_TOKENS] - unanswered["prompt"]),
        round(counted[GENERATION_TOKENS] - unanswered["generation"]),
    )


def extproc_turns(metrics_texts: Iterable[str]) -> dict[str, int]:
    """{"request": n, "response": n}: the safety filter processes' turns, summed."""
    turns = {"request": 0, "response": 0}
    for text in metrics_texts:
        for family in text_string_to_metric_families(text):
            if family.name == EXTPROC_TURNS:
                for sample in family.samples:
                    side = sample.labels.get("side", "")
                    if sample.name.endswith("_total") and side in turns:
                        turns[side] += round(sample.value)
    return turns


@dataclass(frozen=True)
class ProbeDelta:
    """What one probe request cost in one part of its life."""

    envoy: EnvoyCounts
    redis: RedisCounts | None
    turns: int  # the processor's turns (its waits for Python)


@dataclass(frozen=True)
class RoundTrips:
    """Round trips of one request in one part of its life (before the engine, or after),
    the median over a few probe requests. Python round trips are the waits for Python:
    each ext_authz check and rate limit service call, and each turn of the request
    processor; `messages` counts what Envoy sent (several may share one turn)."""

    python: dict[str, float]  # ext_authz, ratelimit, ext_proc (turns), and "total"
    messages: dict[str, float]  # PYTHON_CALLS -> messages Envoy sent, and "total"
    redis_round_trips: float | None
    redis_commands: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "python": self.python,
            "messages": self.messages,
            "redis_round_trips": self.redis_round_trips,
            "redis_commands": self.redis_commands,
        }


def median_round_trips(deltas: Sequence[ProbeDelta]) -> RoundTrips:
    """The median of each count over the probes (a stray control-plane read in one probe
    does not move it)."""

    def median(values: Iterable[float]) -> float:
        return float(statistics.median(list(values)))

    messages = {k: median(d.envoy.python[k] for d in deltas) for k in PYTHON_CALLS}
    messages["total"] = median(d.envoy.python_total for d in deltas)
    python = {
        "ext_authz": messages["ext_authz"],
        "ratelimit": messages["ratelimit"],
        "ext_proc": median(d.turns for d in deltas),
    }
    python["total"] = median(
        d.envoy.python["ext_authz"] + d.envoy.python["ratelimit"] + d.turns for d in deltas
    )
    redis = [d.redis for d in deltas if d.redis is not None]
    return RoundTrips(
        python,
        messages,
        median(r.round_trips for r in redis) if redis else None,
        median(r.commands for r in redis) if redis else None,
    )


def ledger_check(ledger: EngineTokens | None, engines: EngineTokens | None) -> dict[str, object]:
    """Whether the usage ledger holds exactly the tokens the engines counted over the run;
    `matches` is None when either side could not be read."""
    matches = None if ledger is None or engines is None else ledger == engines
    return {
        "matches": matches,
        "ledger": None if ledger is None else vars(ledger) | {"total": ledger.total},
        "engines": None if engines is None else vars(engines) | {"total": engines.total},
    }
