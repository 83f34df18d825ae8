"""The observability files (deploy/observability): Prometheus scrapes every compose service,
Grafana is provisioned with one datasource, and the dashboard asks only for metrics that
Frugal and Envoy really export.

A small real stack (Envoy, control plane, safety filter, sim engines) answers a few chat
completions (streamed, unary, one redacted prompt, one rate-limited request); every
service's /metrics and Envoy's /stats/prometheus are scraped, and each metric name in
each PromQL expression of the dashboard must be among the names scraped. Envoy's engine
cluster names go through prometheus.yml's own relabel rules, which must give back the
stack's models and groups.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from frugal.wire import engine_metrics_port
from tests.helpers.stack import (
    FAST,
    STACK_MARKS,
    FrugalStack,
    replicas,
    running_stack,
    stack_config,
)

pytestmark = STACK_MARKS

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
GRAFANA = OBSERVABILITY / "grafana"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "frugal.yaml"
DASHBOARD = GRAFANA / "dashboards" / "frugal.json"

# Compose service -> the port Prometheus scrapes (compose.yaml uses the same names);
# engines serve metrics on their gRPC port + 1000.
SCRAPED_PORTS = {
    "envoy": 9901,
    "control-plane": 9103,
    "safety-filter": 9110,
    "engine-tp8": engine_metrics_port(50061),
    "engine-tp2": engine_metrics_port(50062),
    "engine-echo": engine_metrics_port(50066),
    "engine-cpu": engine_metrics_port(50067),
    "engine-trtllm": engine_metrics_port(50068),
}
# Series Prometheus writes itself for every target, never in a scraped page.
PROMETHEUS_OWN_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# --- metric names in PromQL -------------------------------------------------------------

PROMQL_FUNCTIONS = frozenset(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv exp floor histogram_avg histogram_count histogram_fraction
    histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta
    increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time
    max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
    sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
    time timestamp vector year""".split()
)
PROMQL_AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile".split()
)
PROMQL_KEYWORDS = frozenset(
    "and or unless by without on ignoring group_left group_right offset bool atan2 inf nan".split()
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
# Not inside a number (1e3, offset 5m) and not a Grafana variable ($__rate_interval).
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*(?P<call>\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+),\s*)?\w+\s*\)\s*$")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads; an unknown function is an error."""
    text = _STRING.sub('""', expression)
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for found in _IDENTIFIER.finditer(text):
        word = found.group(0).rstrip("( \t\n")
        if word.lower() in PROMQL_KEYWORDS:
            continue
        if found.group("call"):
            if word not in PROMQL_FUNCTIONS | PROMQL_AGGREGATIONS:
                raise ValueError(f"unknown PromQL function {word!r} in {expression!r}")
            continue
        names.add(word)
    return names


def variable_metric_names(query: str) -> set[str]:
    """The metric names of a Grafana Prometheus variable query, `label_values(selector, label)`
    (without a selector it reads no metric) or any PromQL expression."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        return metric_names(query)
    selector = found.group("selector")
    return set() if selector is None else metric_names(selector)


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (model_name, le) (rate(frugal_request_ttft_seconds_"
            'bucket{model_name=~"$model"}[$__rate_interval])))',
            {"frugal_request_ttft_seconds_bucket"},
        ),
        (
            "max by (model_name, group) (frugal_balancer_weight and on (instance) "
            "(frugal_balancer_leader == 1))",
            {"frugal_balancer_weight", "frugal_balancer_leader"},
        ),
        (
            'sum(rate(frugal_requests_total{status!~"2..",reason="a}b"}[5m] offset 1h)) BY '
            "(status) / ignoring (status) group_left sum(rate(frugal_requests_total[5m])) "
            "> bool 1e-3",
            {"frugal_requests_total"},
        ),
        ("up == 0", {"up"}),
        (
            'label_replace(envoy_cluster_upstream_rq_active, "group", "$2", '
            '"envoy_cluster_name", "engine__(.+?)__(.+)")',
            {"envoy_cluster_upstream_rq_active"},
        ),
    ],
)
def test_metric_names_are_read_out_of_promql(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_an_unknown_function_is_an_error_not_a_metric() -> None:
    with pytest.raises(ValueError, match="'rat'"):
        metric_names("sum(rat(frugal_requests_total[5m]))")


def test_variable_queries_name_their_selector_only() -> None:
    assert variable_metric_names("label_values(frugal_requests_total, model_name)") == {
        "frugal_requests_total"
    }
    assert variable_metric_names("label_values(model_name)") == set()


# --- the files ---------------------------------------------------------------------------


def _yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, set[str]]]:
    """(where, metric names) of every panel target and every variable."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        yield f"variable {variable['name']}", variable_metric_names(text)


def _datasource_uid() -> str:
    (datasource,) = _yaml(DATASOURCE)["datasources"]
    uid: str = datasource["uid"]
    return uid


def test_grafana_provisioning() -> None:
    (datasource,) = _yaml(DATASOURCE)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"]
    (provider,) = _yaml(DASHBOARD_PROVIDER)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["uid"] and dashboard["title"]
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    uid = _datasource_uid()
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


def test_prometheus_scrapes_every_service_every_5_s() -> None:
    config = _yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(SCRAPED_PORTS)
    for service, port in SCRAPED_PORTS.items():
        (discovery,) = jobs[service]["dns_sd_configs"]  # every replica of a scaled service
        assert (discovery["names"], discovery["type"], discovery["port"]) == (
            [service],
            "A",
            port,
        ), service
        rules = jobs[service]["relabel_configs"]
        added = {rule["target_label"]: rule["replacement"] for rule in rules}
        assert added["service"] == service
        assert added["component"] in {"envoy", "control-plane", "safety-filter", "engine"}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"


# --- against a real stack ----------------------------------------------------------------

CHAT = "/v1/chat/completions"


def _chat(model: str, content: str, *, stream: bool) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FrugalStack]:
    models: list[dict[str, Any]] = [
        {"name": "sim-echo", "echo": True, "groups": [
            {"name": "echo", "profile": "fast", "replicas": replicas(1)}]},
        {"name": "sim-mixtral", "groups": [
            {"name": "tp8", "profile": "fast", "weight": 50, "replicas": replicas(1)},
            {"name": "tp2", "profile": "fast", "weight": 50, "replicas": replicas(2)}]},
    ]  # fmt: skip
    profiles = {"fast": {**FAST, "output_tokens_min": 8, "output_tokens_max": 16}}
    directory = Path(tmp_path_factory.mktemp("observability"))
    async with running_stack(directory, stack_config(models, profiles)) as running:
        yield running


async def _send_traffic(stack: FrugalStack) -> None:
    """Streamed and unary answers, a prompt the default policy redacts, and a key over its
    requests per minute."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers=stack.auth, timeout=30) as c:
        for stream in (True, False):
            for model in ("sim-echo", "sim-mixtral"):
                body = _chat(model, "mail bob@example.com", stream=stream)
                answer = await c.post(CHAT, json=body)
                assert answer.status_code == 200, answer.text
    async with httpx.AsyncClient(base_url=stack.admin_url, headers=stack.admin_headers) as admin:
        created = await admin.post("/admin/v1/keys", json={"name": "one", "tenant": "t", "rpm": 1})
    headers = {"authorization": f"Bearer {created.json()['key']}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as c:
        codes = [(await c.post(CHAT, json=_chat("sim-echo", "hi", stream=False))).status_code
                 for _ in range(2)]  # fmt: skip
    assert codes == [200, 429]


def _metrics_urls(stack: FrugalStack) -> dict[str, str]:
    config = stack.config
    urls = {
        "envoy": f"{stack.envoy_admin}/stats/prometheus",
        "control-plane": f"http://127.0.0.1:{config.control_plane.metrics_port}/metrics",
    }
    for index in range(config.safety_filter.processes):
        port = config.safety_filter.metrics_port + index
        urls[f"safety-filter/{index}"] = f"http://127.0.0.1:{port}/metrics"
    for model in config.models:
        for group in model.groups:
            for index, replica in enumerate(group.replicas):
                url = f"http://127.0.0.1:{engine_metrics_port(replica.port)}/metrics"
                urls[f"engine {model.name}/{group.name}/{index}"] = url
    return urls


async def _scrape(stack: FrugalStack) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        pages = {}
        for service, url in _metrics_urls(stack).items():
            page = await client.get(url)
            assert page.status_code == 200, f"{service}: {url} answered {page.status_code}"
            pages[service] = page.text
    return pages


# A sample line of the text format starts with its metric name.
_SAMPLE_NAME = re.compile(r"^([A-Za-z_:][\w:]*)", re.MULTILINE)


def _sample_names(page: str) -> set[str]:
    """The series names Prometheus stores from a page: as written, because prometheus_client's
    parser renames a counter without `_total` (all of Envoy's) to `<name>_total`."""
    return set(_SAMPLE_NAME.findall(page))


@pytest.fixture(scope="module")
async def scraped(stack: FrugalStack) -> dict[str, str]:
    await _send_traffic(stack)
    return await _scrape(stack)


async def test_every_dashboard_query_reads_metrics_the_stack_exports(
    scraped: dict[str, str],
) -> None:
    exported = {service: _sample_names(page) for service, page in scraped.items()}
    assert all(exported.values()), [service for service, names in exported.items() if not names]
    known = set().union(*exported.values()) | PROMETHEUS_OWN_SERIES
    queries = list(_queries(_dashboard()))
    missing = {where: names - known for where, names in queries if names - known}
    assert not missing, f"dashboard queries name metrics no service exports: {missing}"
    used = set().union(*(names for _, names in queries))
    # The panels the brief names, each with its real metric.
    assert {
        "frugal_request_ttft_seconds_bucket",
        "frugal_request_tpot_seconds_bucket",
        "frugal_completion_tokens_total",
        "frugal_requests_total",
        "frugal_engine_num_requests_running",
        "frugal_engine_num_requests_waiting",
        "envoy_cluster_upstream_rq_active",
        "frugal_balancer_weight",
        "frugal_ratelimit_decisions_total",
        "frugal_content_detections_total",
        "frugal_request_errors_total",
    } <= used


def _relabeled(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """Prometheus' `replace` relabelling (the default action) of one series' labels: an
    anchored regex over the source labels joined by ';', `$N` in the replacement."""
    result = dict(labels)
    for rule in rules:
        assert rule.get("action", "replace") == "replace"
        value = ";".join(labels.get(name, "") for name in rule["source_labels"])
        found = re.fullmatch(rule["regex"], value)
        if found is not None:
            result[rule["target_label"]] = _expand(found, rule["replacement"])
    return result


def _expand(found: re.Match[str], replacement: str) -> str:
    return re.sub(r"\$(\d+)", lambda group: found.group(int(group[1])), replacement)


async def test_envoy_engine_clusters_get_model_and_group_labels(
    stack: FrugalStack, scraped: dict[str, str]
) -> None:
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    rules = jobs["envoy"]["metric_relabel_configs"]
    active = [
        sample.labels
        for family in text_string_to_metric_families(scraped["envoy"])
        for sample in family.samples
        if sample.name == "envoy_cluster_upstream_rq_active"
    ]
    labelled = {
        (labels["model_name"], labels["group"])
        for labels in (_relabeled(rules, series) for series in active)
        if "model_name" in labels
    }
    expected = {(m.name, g.name) for m in stack.config.models for g in m.groups}
    assert labelled == expected
    assert len(active) > len(expected), "Envoy's own clusters (xds, safety filter) keep no model"
