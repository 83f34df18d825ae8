"""Envoy's overload manager as the rendered bootstrap configures it, on the real binary.

A bare Envoy from `render_bootstrap` with, instead of ADS, one static listener that
answers 200 itself and maps local replies as the public listener does
(local_replies.py): the heap monitor is read (this build has tcmalloc), and with a heap
limit below what Envoy holds, stop_accepting_requests turns on and requests get 503
with the OpenAI error body that says the gateway is overloaded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import yaml

from control_plane.model import FrugalConfig
from control_plane.translate.local_replies import OVERLOADED_MESSAGE, build_local_reply_config
from frugal.cli.envoy_bootstrap import render_bootstrap
from tests.helpers.envoy_process import EnvoyProcess, free_port
from tests.helpers.stack import STACK_MARKS

pytestmark = STACK_MARKS
CLIENT_TIMEOUT_S = 30.0


def _listener_with_our_local_replies(port: int) -> dict[str, Any]:
    """A static listener answering 200 itself, with the public listener's local replies."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "overload_probe",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                }
            ]
        },
        "local_reply_config": build_local_reply_config(),
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "name": "overload_probe",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": hcm}]}
        ],
    }  # fmt: skip


async def test_the_bootstraps_heap_monitor_runs_and_stops_requests_above_its_limit() -> None:
    """The real binary accepts the rendered bootstrap, reads its heap (a tcmalloc build)
    and, with a limit below what it holds, turns on stop_accepting_requests: requests
    get 503 with the OpenAI error body of local_replies.py."""
    models = [{"name": "m", "groups": [{"name": "g", "profile": "p", "replicas": ["1.2.3.4:1"]}]}]
    base = FrugalConfig.model_validate({"profiles": {"p": {}}, "models": models})
    pressure_stat = "overload.envoy.resource_monitors.fixed_heap.pressure"
    active_stat = "overload.envoy.overload_actions.stop_accepting_requests.active"
    for heap, stopped in ((base.envoy.max_heap_bytes, 0), (1 << 20, 1)):
        # 1 MiB is below the schema's floor on purpose (model_copy does not validate).
        envoy_config = base.envoy.model_copy(update={"max_heap_bytes": heap, "admin_port": 0})
        bootstrap = yaml.safe_load(
            render_bootstrap(base.model_copy(update={"envoy": envoy_config}))
        )
        port = free_port()
        # No control plane here: a static listener instead of ADS (which would hold the
        # listeners back until its initial fetch timed out).
        del bootstrap["dynamic_resources"]
        bootstrap["static_resources"]["listeners"] = [_listener_with_our_local_replies(port)]
        envoy = EnvoyProcess()
        try:
            envoy.start(bootstrap)
            pressure = active = None
            for _ in range(200):
                pressure = await envoy.stat(pressure_stat)
                active = await envoy.stat(active_stat)
                if pressure is not None and active == stopped:
                    break
                await asyncio.sleep(0.1)
            assert pressure is not None, envoy.log_text()
            assert active == stopped, (heap, pressure, active)
            async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S) as client:
                response = await client.get(f"http://127.0.0.1:{port}/")
            if stopped:
                assert response.status_code == 503, response.text
                error = json.loads(response.content)["error"]
                assert error == {
                    "message": OVERLOADED_MESSAGE,
                    "type": "server_error",
                    "code": "overloaded",
                }
            else:
                assert response.status_code == 200
        finally:
            envoy.stop()
