"""Benchmark: `scan` of long prompts with the default content policy, fast path vs reference.

Run: `.venv/bin/python -m tests.benchmarks.prompt_checks [--rounds N]`.
Prompts are seeded English prose (numbers, years, dates, times, prices, versions,
hyphens, colons, quotes: about one token in thirty is a number) of 20 KB and 200 KB,
clean or with a handful of sensitive values planted (three emails, two phone numbers,
one card number). For each, the median and p90 milliseconds of `scan` and of the
straightforward path that searches every pattern over the whole text
(tests/helpers/content_reference.py), and the speed-up; both must find the same
matches. Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from frugal.content_checks import DEFAULT_POLICY, Match, scan
from tests.helpers.content_reference import reference_scan

WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "which but they their one all we can has more also been will would there request model "
    "gateway latency throughput answer prompt token stream engine replica budget policy "
    "quota cache memory batch queue service client server window report summary table "
    "figure section chapter result method system design review change release customer "
    "account order invoice payment shipment address contact meeting schedule project team "
    "about after before during under over between through against without within across "
    "quickly slowly carefully usually often rarely never always sometimes however therefore "
    "long-term well-known state-of-the-art read-only end-to-end follow-up re-run e-mail "
    "Monday January London Paris Amazon Google Python Linux Kubernetes Envoy Redis"
).split()
SENSITIVE = (
    "jane.doe+news@mail.example.co.uk",
    "+1 (415) 555-2671",
    "4111 1111 1111 1111",
    "support@example.org",
    "020 7946 0958",
    "li.novak@corp.example.net",
)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return str(rng.randint(1900, 2030))
    if kind == 1:
        return f"{rng.randint(1, 99)}.{rng.randint(0, 9)}%"
    if kind == 2:
        return f"${rng.randint(1, 99)},{rng.randint(100, 999)}"
    if kind == 3:
        return f"{rng.randint(2000, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 4:
        return f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    if kind == 5:
        return f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    if kind == 6:
        return f"{rng.randint(1, 20)}-{rng.randint(21, 60)}"
    return str(rng.randint(1, 500))


def _sentence(rng: random.Random) -> str:
    tokens = [
        _number(rng) if rng.random() < 0.033 else rng.choice(WORDS)
        for _ in range(rng.randint(6, 22))
    ]
    if rng.random() < 0.1:
        at = rng.randrange(len(tokens))
        tokens[at] = f'"{tokens[at]}"'
    if rng.random() < 0.1:
        at = rng.randrange(len(tokens))
        tokens[at] = f"({tokens[at]})"
    text = " ".join(tokens)
    return text[0].upper() + text[1:] + rng.choice((". ", ". ", ", ", "; ", ": ", "? ", ".\n\n"))


def prose(size: int, seed: int = 0) -> str:
    """Seeded English-like prose of exactly `size` characters, with nothing sensitive in it."""
    rng = random.Random(seed)
    pieces: list[str] = []
    length = 0
    while length < size:
        pieces.append(_sentence(rng))
        length += len(pieces[-1])
    return "".join(pieces)[:size]


def with_sensitive_values(text: str) -> str:
    """`text` with each SENSITIVE value put between two words, spread over the text."""
    pieces: list[str] = []
    position = 0
    for index, value in enumerate(SENSITIVE):
        cut = text.index(" ", (index + 1) * len(text) // (len(SENSITIVE) + 1)) + 1
        pieces += [text[position:cut], value, " "]
        position = cut
    pieces.append(text[position:])
    return "".join(pieces)


def timings_ms(run: Callable[[str], list[Match]], text: str, rounds: int) -> list[float]:
    """Milliseconds of `run` on `rounds` fresh copies of `text`, as each request brings its own."""
    run(text)  # warm caches (compiled detectors, first-use allocations)
    copies = [(text + " ")[:-1] for _ in range(rounds)]
    samples = []
    for copy in copies:
        started = time.perf_counter()
        run(copy)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=50, help="timed scans per prompt")
    args = parser.parse_args()
    reference_rounds = max(5, args.rounds // 5)
    print(
        "| prompt | matches | scan median ms | scan p90 ms | reference median ms "
        "| reference p90 ms | speed-up |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for size in (20_000, 200_000):
        clean = prose(size)
        for label, text in (("clean", clean), ("sensitive", with_sensitive_values(clean))):
            found = scan(text, DEFAULT_POLICY)
            if found != reference_scan(text, DEFAULT_POLICY):
                raise SystemExit(f"{size // 1000} KB {label}: scan and reference disagree")
            fast = timings_ms(lambda t: scan(t, DEFAULT_POLICY), text, args.rounds)
            slow = timings_ms(lambda t: reference_scan(t, DEFAULT_POLICY), text, reference_rounds)
            print(
                f"| {len(text) // 1000} KB {label} | {len(found)} | "
                f"{statistics.median(fast):.2f} | {p90(fast):.2f} | "
                f"{statistics.median(slow):.2f} | {p90(slow):.2f} | "
                f"{statistics.median(slow) / statistics.median(fast):.0f}x |"
            )


if __name__ == "__main__":
    main()
