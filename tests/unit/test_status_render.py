"""`frugal status`: the pure frame renderer, and the CLI's errors without an admin API."""

from __future__ import annotations

from typing import Any

import pytest

from control_plane.admin.status import GatewayStatus, GroupStatus, ModelStatus, StatusTotals
from frugal.cli.__main__ import main
from frugal.cli.status import WIDTH, render_status
from tests.helpers.redis_server import _free_port

TOKEN = "status-admin-token-0123456789"


def group(name: str, weight: int, rps: float | None, eps: float | None = 0.0,
          **replicas: int) -> GroupStatus:  # fmt: skip
    return GroupStatus(
        name=name, weight=weight, static_weight=1, in_flight=3.0, requests_per_s=rps,
        errors_per_s=eps if rps is not None else None,
        error_share=(eps or 0.0) / rps if rps else None,
        replicas_healthy=replicas.get("healthy", 1), replicas_draining=replicas.get("draining", 0),
        replicas_total=replicas.get("total", 1),
    )  # fmt: skip


def status(
    *models: ModelStatus, connected: bool = True, age: float | None = 0.4, leader: bool = True
) -> dict[str, Any]:
    return GatewayStatus(
        envoy_connected=connected, envoy_streams=1 if connected else 0, config_generation=7,
        balancer_leader=leader, window_s=10.0, stats_age_s=age,
        totals=StatusTotals(models=len(models), groups=sum(len(m.groups) for m in models),
                            in_flight=6.0, requests_per_s=12.5, errors_per_s=0.5,
                            error_share=0.04),
        models=list(models),
    ).model_dump(mode="json")  # fmt: skip


MIXTRAL = ModelStatus(
    name="sim-mixtral", policy="concurrency_bands", in_flight=6.0, requests_per_s=12.5,
    errors_per_s=0.5, error_share=0.04,
    groups=[group("tp8", 100, 10.0, 0.5), group("tp2", 0, 2.5, healthy=1, draining=1, total=2)],
)  # fmt: skip
IDLE = ModelStatus(
    name="a-model-with-a-really-long-name-that-goes-on-and-on", policy="static", in_flight=0,
    requests_per_s=None, errors_per_s=None, error_share=None,
    groups=[group("g" * 60, 1, None)],
)  # fmt: skip


def test_frame_shows_totals_models_groups_and_rates() -> None:
    lines = render_status(status(MIXTRAL, IDLE))
    text = "\n".join(lines)
    assert "Envoy connected (1 ADS stream)" in lines[0] and "config #7" in lines[0]
    assert "counters read 0.4 s ago" in lines[0] and "rates over 10 s" in lines[0]
    assert lines[1] == "2 models, 3 groups   6 in flight   12.5 req/s   0.50 errors/s (4.0 %)"
    model = next(line for line in lines if line.startswith("sim-mixtral"))
    assert model.split() == ["sim-mixtral", "concurrency_bands", "2/1/3", "6", "12.5", "0.50",
                             "4.0"]  # fmt: skip
    tp8 = next(line for line in lines if line.startswith("  tp8"))
    assert tp8.split() == ["tp8", "100", "1/0/1", "3", "10.0", "0.50", "5.0"]
    tp2 = next(line for line in lines if line.startswith("  tp2"))
    assert tp2.split() == ["tp2", "0", "1/1/2", "3", "2.5", "0.00", "0.0"]
    assert "healthy/draining/total" in text


def test_unknown_rates_show_as_dashes_and_long_names_are_cut() -> None:
    lines = render_status(status(IDLE, age=None))
    assert "counters not read yet" in lines[0]
    model = next(line for line in lines if line.startswith("a-model"))
    assert model.split()[-4:] == ["0", "-", "-", "-"]
    assert "..." in model and "static" in model


def test_every_line_fits_in_100_columns() -> None:
    many = [MIXTRAL.model_copy(update={"name": f"model-{i}" * 8}) for i in range(6)]
    lines = render_status(status(*many, IDLE))
    assert WIDTH == 100
    assert max(len(line) for line in lines) <= 100
    assert len(render_status(status(MIXTRAL))) < 12  # one screen for a small fleet


def test_disconnected_envoy_and_no_models_are_said_plainly() -> None:
    lines = render_status(status(connected=False))
    assert lines[0].startswith("Envoy NOT connected")
    assert "(no models configured)" in lines


def test_a_follower_control_plane_says_its_weights_come_from_the_leader() -> None:
    assert "(weights from the balancer leader)" in render_status(status(leader=False))[0]
    assert "balancer leader" not in render_status(status())[0]


def test_unreachable_admin_api_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["status", "--once", "--admin-url", url, "--admin-token", TOKEN]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and err.startswith("frugal status: cannot reach the admin API at")


def test_interval_must_be_sensible(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["status", "--interval", "0", "--admin-token", TOKEN])
    assert "at least 0.1" in capsys.readouterr().err
