"""A container's health probe: is the process in this container serving? (edge layer, CLI)

The images are slim (no curl), so every health check is this module:

    python -m frugal.deploy.probe grpc 127.0.0.1:50061      # grpc.health.v1: SERVING
    python -m frugal.deploy.probe http http://127.0.0.1:8081/admin/docs   # any 2xx

Exit status 0 when healthy, 1 when not (with the reason on stderr), as HEALTHCHECK and
compose's `healthcheck.test` read it.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class Unhealthy(Exception):
    """The probed process does not serve; the message says what was seen."""


def check_grpc(address: str, service: str, timeout_s: float) -> None:
    """grpc.health.v1 Check of `service` ("" is the whole server) must answer SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            raise Unhealthy(f"{address}: {error.code().name}") from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise Unhealthy(f"{address}: {status}")


def check_http(url: str, timeout_s: float) -> None:
    """GET `url` must answer 2xx."""
    # Never through a proxy from the environment: the probe asks this container itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        raise Unhealthy(f"{url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise Unhealthy(f"{url}: {error}") from None
    if not 200 <= status < 300:
        raise Unhealthy(f"{url}: HTTP {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frugal.deploy.probe")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_parser = kinds.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_parser.add_argument("address", help="host:port")
    grpc_parser.add_argument("--service", default="", help='health service name (default "")')
    http_parser = kinds.add_parser("http", help="GET, 2xx")
    http_parser.add_argument("url")
    args = parser.parse_args(argv)
    try:
        if args.kind == "grpc":
            check_grpc(args.address, args.service, args.timeout)
        else:
            check_http(args.url, args.timeout)
    except Unhealthy as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
