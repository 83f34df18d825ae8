"""Run the real Envoy binary in tests: start from a bootstrap, wait until ready, read its log.

Layer: test support (process I/O). The binary is the one `frugal up` runs (frugal.cli.stack's
find_envoy: $FRUGAL_ENVOY_BIN, the repository's .venv-envoy, PATH). Every Envoy gets its own
temp directory, an admin port chosen by the kernel (read back through --admin-address-path) and
--use-dynamic-base-id, so several can run at once. `stop()` ends only the process this object
started, by its pid.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from frugal.cli.stack import find_envoy


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for Envoy listeners)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ads_bootstrap(
    node_id: str, xds_port: int, *, api_type: str = "GRPC", admin_port: int = 0
) -> dict[str, Any]:
    """A minimal bootstrap: everything (CDS, LDS and what they name) over ADS from
    127.0.0.1:`xds_port`. `api_type` is "GRPC" (state of the world) or "DELTA_GRPC"."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": "frugal-test"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }


class EnvoyProcess:
    """One Envoy process started from a bootstrap (dict or YAML text) in its own temp dir."""

    def __init__(self, binary: str | None = None, *, log_level: str = "info") -> None:
        self.binary = binary or find_envoy()
        self.log_level = log_level
        self._tmp = tempfile.TemporaryDirectory(prefix="frugal-envoy-")
        self.workdir = Path(self._tmp.name)
        self.log_path = self.workdir / "envoy.log"
        self._admin_path = self.workdir / "admin-address"
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_port: int | None = None
        self._final_log: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, bootstrap: dict[str, Any] | str, *extra_args: str) -> None:
        """Start Envoy. A dict is written as JSON, a string as YAML. Set the admin port in the
        bootstrap (0 lets the kernel choose; `admin_port()` reads it back)."""
        if isinstance(bootstrap, dict):
            config = self.workdir / "bootstrap.json"
            config.write_text(json.dumps(bootstrap))
        else:
            config = self.workdir / "bootstrap.yaml"
            config.write_text(bootstrap)
        args = [
            self.binary,
            "-c",
            str(config),
            "--admin-address-path",
            str(self._admin_path),
            "--use-dynamic-base-id",
            "--log-level",
            self.log_level,
            *extra_args,
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    async def admin_port(self, timeout: float = 10.0) -> int:
        """The admin port, once Envoy has written it."""
        deadline = time.monotonic() + timeout
        while self._admin_port is None:
            text = self._admin_path.read_text() if self._admin_path.exists() else ""
            if text.strip():
                self._admin_port = int(text.strip().rsplit(":", 1)[1])
                break
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy wrote no admin address:\n{self.log_text()}")
            await asyncio.sleep(0.05)
        return self._admin_port

    async def admin_get(self, path: str) -> httpx.Response:
        port = await self.admin_port()
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
            return await client.get(f"http://127.0.0.1:{port}{path}")

    async def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until GET /ready answers 200 LIVE (initial xDS fetches done)."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            self._check_alive()
            try:
                response = await self.admin_get("/ready")
                last = response.text.strip()
                if response.status_code == 200 and last == "LIVE":
                    return
            except httpx.TransportError as error:
                last = repr(error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy not ready ({last}):\n{self.log_text()}")
            await asyncio.sleep(0.1)

    async def stat(self, name: str) -> int | None:
        """The value of one counter or gauge from /stats (None when absent)."""
        response = await self.admin_get(f"/stats?format=json&filter=^{name}$")
        for entry in response.json().get("stats", []):
            if entry.get("name") == name and isinstance(entry.get("value"), int):
                return int(entry["value"])
        return None

    def log_text(self) -> str:
        """Everything Envoy logged so far (kept after `stop()`)."""
        if self._final_log is not None:
            return self._final_log
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM this Envoy (by pid), SIGKILL if it lingers, and remove its temp dir."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._final_log is None:
            self._final_log = self.log_text()
        self._tmp.cleanup()

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"Envoy exited with {self._process.returncode}:\n{self.log_text()}")
