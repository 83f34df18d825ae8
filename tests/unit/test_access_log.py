"""The access log and the gateway-overhead header as Envoy config, and the rotation decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from google.protobuf import json_format
from pydantic import ValidationError

from control_plane.access_log_rotation import (
    AccessLogError,
    AccessLogRotator,
    Rotation,
    backup_path,
    plan_rotation,
    prepare_access_log,
)
from control_plane.model import AccessLogConfig, FrugalConfig
from control_plane.server import api_descriptor
from control_plane.translate import translate
from control_plane.translate.access_log import ACCESS_LOG_FIELDS, build_access_logs
from frugal import wire
from tests.unit.test_translate import config_data, hcm_of, http_filter

ENVOY_FIELDS = {
    "time": "%START_TIME%",
    "request_id": f"%REQ({wire.REQUEST_ID_HEADER.upper()})%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_HOST%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}


def config(access_log: dict[str, Any] | None = None) -> FrugalConfig:
    data = config_data()
    if access_log is not None:
        data["access_log"] = access_log
    return FrugalConfig.model_validate(data)


def access_log_of(frugal: FrugalConfig) -> file_pb2.FileAccessLog:
    (entry,) = hcm_of(translate(frugal, api_descriptor(), 0)).access_log
    assert entry.name == "envoy.access_loggers.file"
    log = file_pb2.FileAccessLog()
    assert entry.typed_config.Unpack(log)
    return log


# --- config


def test_defaults() -> None:
    access_log = config().access_log
    assert access_log.enabled is True
    assert access_log.path == "var/log/access.log"
    assert access_log.max_bytes == 50 * 1024 * 1024
    assert access_log.backups == 5


@pytest.mark.parametrize(
    "bad", [{"max_bytes": -1}, {"backups": -1}, {"check_interval_s": 0}, {"path": ""}]
)
def test_bad_values_are_refused_by_name(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        config(bad)


def test_a_relative_path_goes_under_the_base_directory(tmp_path: Path) -> None:
    assert AccessLogConfig().under(tmp_path).path == str(tmp_path / "var/log/access.log")
    absolute = AccessLogConfig(path="/srv/log/frugal.log")
    assert absolute.under(tmp_path) == absolute


# --- the Envoy config


def test_one_json_file_log_with_every_field(tmp_path: Path) -> None:
    log = access_log_of(config({"path": str(tmp_path / "a.log")}))
    assert log.path == str(tmp_path / "a.log")
    fields = json_format.MessageToDict(log.log_format.json_format)
    assert fields == ACCESS_LOG_FIELDS
    assert ENVOY_FIELDS.items() <= fields.items()
    # Identity from the request processor's metadata, never from a client-sent header.
    assert fields["key_id"] == "%DYNAMIC_METADATA(frugal.request:key_id)%"
    assert fields["tenant"] == "%DYNAMIC_METADATA(frugal.request:tenant)%"
    for key in ("model", "prompt_tokens", "completion_tokens", "ttft_ms", "engine_ms", "error"):
        assert fields[key] == f"%DYNAMIC_METADATA({wire.REQUEST_METADATA_NAMESPACE}:{key})%"
    assert fields["gateway_ms"] == "%DYNAMIC_METADATA(frugal.gateway:overhead_ms)%"


def test_every_field_is_one_command_so_envoy_keeps_its_type() -> None:
    for name, command in ACCESS_LOG_FIELDS.items():
        assert command.startswith("%") and command.endswith("%"), name
        assert command.count("%") == 2, name


def test_a_disabled_log_is_not_configured() -> None:
    assert build_access_logs(AccessLogConfig(enabled=False)) == []
    hcm = hcm_of(translate(config({"enabled": False}), api_descriptor(), 0))
    assert len(hcm.access_log) == 0


def test_responses_carry_the_request_id() -> None:
    hcm = hcm_of(translate(config(), api_descriptor(), 0))
    assert hcm.generate_request_id.value is True
    assert hcm.always_set_request_id_in_response is True


def test_the_router_adds_the_overhead_in_microseconds_unless_empty() -> None:
    (route_config,) = translate(config(), api_descriptor(), 0).routes
    (header,) = route_config.response_headers_to_add
    assert header.header.key == wire.GATEWAY_OVERHEAD_US_HEADER
    assert header.header.value == "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%"
    assert header.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert header.keep_empty_value is False


def test_lua_turns_it_into_milliseconds_right_after_the_router() -> None:
    hcm = hcm_of(translate(config(), api_descriptor(), 0))
    names = [f.name for f in hcm.http_filters]
    assert names[-2:] == ["envoy.filters.http.lua", "envoy.filters.http.router"]
    lua = http_filter(hcm, "envoy.filters.http.lua", lua_pb2.Lua())
    source = lua.default_source_code.inline_string
    assert "function envoy_on_response(handle)" in source
    assert "envoy_on_request" not in source  # nothing to do on the way in
    assert f'headers:remove("{wire.GATEWAY_OVERHEAD_US_HEADER}")' in source
    assert f'headers:replace("{wire.GATEWAY_OVERHEAD_HEADER}", ms)' in source
    assert 'string.format("%.3f", us / 1000)' in source


# --- rotation decisions


def test_no_rotation_below_the_limit_or_without_one() -> None:
    assert plan_rotation(size=100, max_bytes=100, backups=5, present=[]) is None
    assert plan_rotation(size=10**9, max_bytes=0, backups=5, present=[]) is None


def test_the_first_rotation_moves_the_live_file_to_dot_1() -> None:
    assert plan_rotation(101, 100, 5, []) == Rotation(renames=((0, 1),))


def test_backups_shift_oldest_first_and_the_oldest_is_replaced() -> None:
    plan = plan_rotation(101, 100, 3, [1, 2, 3])
    assert plan == Rotation(renames=((2, 3), (1, 2), (0, 1)))


def test_gaps_are_not_renamed() -> None:
    assert plan_rotation(101, 100, 4, [1, 3]) == Rotation(renames=((3, 4), (1, 2), (0, 1)))


def test_backups_beyond_the_count_are_left_alone() -> None:
    assert plan_rotation(101, 100, 1, [1, 2, 7]) == Rotation(renames=((0, 1),))


def test_no_backups_deletes_the_full_file() -> None:
    assert plan_rotation(101, 100, 0, [1]) == Rotation(renames=(), delete_live=True)


def test_backup_paths() -> None:
    path = Path("/var/log/access.log")
    assert backup_path(path, 0) == path
    assert backup_path(path, 2) == Path("/var/log/access.log.2")


# --- the rotator on real files (its POST /reopen_logs to a real Envoy: e2e/test_access_log.py)


def test_prepare_creates_the_directory_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "log" / "access.log"
    prepare_access_log(path)
    assert path.is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AccessLogError, match=r"access_log\.path"):
        prepare_access_log(blocker / "access.log")


async def test_the_rotator_shifts_files_keeping_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    config = AccessLogConfig(path=str(path), max_bytes=10, backups=2)
    rotator = AccessLogRotator(config, envoy_admin_urls=[])
    try:
        path.write_text("short\n")
        assert await rotator.check() is False
        for generation in ("first line\n", "second line\n", "third line\n"):
            path.write_text(generation)
            assert await rotator.check() is True
            assert not path.exists()  # Envoy recreates it when it reopens
        assert backup_path(path, 1).read_text() == "third line\n"
        assert backup_path(path, 2).read_text() == "second line\n"
        assert not backup_path(path, 3).exists()
    finally:
        await rotator.close()
