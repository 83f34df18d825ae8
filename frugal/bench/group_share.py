"""Where the traffic went: each replica group's share of a level's requests, from Envoy's own
per-cluster counters (`cluster.<name>.upstream_rq_total` on the admin /stats page).

Pure layer: parsing and differencing; load.py fetches the page. The share is observed at the
data plane, so it shows what a balancer policy actually did, whatever its internals.
"""

from __future__ import annotations

from collections.abc import Mapping


def upstream_requests(stats_text: str, clusters: Mapping[str, str]) -> dict[str, int]:
    """Requests sent so far to each group, from Envoy's plain-text stats; `clusters` maps a
    group name to its Envoy cluster name."""
    counters: dict[str, int] = {}
    for line in stats_text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("cluster.") and name.endswith(".upstream_rq_total"):
            cluster = name[len("cluster.") : -len(".upstream_rq_total")]
            counters[cluster] = int(value)
    return {group: counters.get(cluster, 0) for group, cluster in clusters.items()}


def shares(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """Each group's fraction of the requests sent between two readings (0 for all when none)."""
    sent = {group: after.get(group, 0) - before.get(group, 0) for group in after}
    total = sum(sent.values())
    return {group: (count / total if total else 0.0) for group, count in sent.items()}
