"""The compose deployment for real, on podman: the images built from the Dockerfile, the stack
brought up from compose.yaml by podman-compose, the official SDK through the published port
(unary and streamed), the engine group scaled from 1 to 2 and the safety filter from its 2
replicas to 3 with traffic reaching the new containers, and everything torn down.

What differs from a user's `docker compose up`, and why:
- Third-party images (Envoy, Redis, the Python base) are local stand-ins built from Debian
  (tests/helpers/podman_images.py): no registry is reachable here. compose.yaml is unchanged;
  they go in through its image variables.
- The `engine-cpu` service runs the `engine` image with the sim backend, through an override
  file of this test: building the CPU model's image (torch and the model conversion) would
  take most of CI's time on two cores. That image was built and run by hand (README).
- Podman 4.3 has no health-check conditions (podman-compose says so and starts the services
  in order; their restart policies cover an early start), so the test waits for the API.
- pip inside the builds reaches PyPI through this machine's TLS proxy: its CA bundle goes in
  as a build secret, as the Dockerfile documents.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from control_plane.translate.policy_filters import SAFETY_FILTER_CLUSTER
from tests.helpers.podman_images import CACHE, PYTHON, REPO_ROOT, Podman, ensure_standins
from tests.helpers.stack import free_port

pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

PROJECT = "frugal-e2e"
TAG = "e2e"
TARGETS = ("control-plane", "safety-filter", "engine")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PODMAN_COMPOSE = REPO_ROOT / ".venv/bin/podman-compose"
OVERRIDE = """\
services:
  engine-cpu:
    image: frugal/engine:e2e
    environment:
      FRUGAL_ENGINE_BACKEND: sim
      FRUGAL_ENGINE_PROFILE: tp2
      FRUGAL_ENGINE_PARAMETERS: "{}"
"""


@dataclass
class ComposeStack:
    podman: Podman
    env: dict[str, str]
    files: tuple[Path, ...]
    api_url: str
    admin_url: str
    admin_token: str

    def compose(self, *args: str, timeout: float = 600) -> str:
        argv = [str(PODMAN_COMPOSE), "-p", PROJECT]
        for file in self.files:
            argv += ["-f", str(file)]
        done = subprocess.run(
            [*argv, *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"podman-compose {args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def remove(self) -> None:
        """Every container, network and volume of the project. podman-compose's `down`
        leaves the containers `--scale` added, and a container its restart policy was
        bringing back can outlive one removal: remove by compose's label until none is left."""
        for _ in range(5):
            leftover = self.project_containers()
            if leftover:
                self.podman.run("rm", "-f", "--depend", *leftover)
            self.compose("down", "-v", timeout=300)
            if not self.project_containers():
                return
            time.sleep(1)

    def project_containers(self) -> list[str]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return self.podman.run("ps", "-aq", "--filter", label).stdout.split()

    def containers(self, service: str) -> list[str]:
        names = self.podman.run("ps", "--format", "{{.Names}}").stdout.split()
        return sorted(n for n in names if re.fullmatch(rf"{PROJECT}_{service}_\d+", n))

    def envoy_healthy_hosts(self, cluster: str) -> int:
        """Hosts of `cluster` that Envoy counts healthy, from its admin (inside its
        container: the admin port is not published; the image has bash, not curl)."""
        (envoy,) = self.containers("envoy")
        request = "GET /clusters HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
        script = f"exec 3<>/dev/tcp/127.0.0.1/9901 && printf '{request}' >&3 && cat <&3"
        text = self.podman.run("exec", envoy, "bash", "-c", script).stdout
        flags = re.findall(rf"^{cluster}::[^:]+:\d+::health_flags::(\S+)$", text, re.MULTILINE)
        return sum(1 for flag in flags if flag == "healthy")

    def metric(self, container: str, port: int, name: str) -> float:
        """The sum of a metric's samples, read inside the container (nothing is published)."""
        script = (
            "import urllib.request;"
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read().decode())"
        )
        text = self.podman.run("exec", container, "python", "-c", script).stdout
        values = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
        return sum(float(v) for v in values)


def _build_images(podman: Podman) -> None:
    secret = (
        ["--secret", f"id=pip-ca,src={HOST_CA}", "--build-arg", "PIP_CERT=/run/secrets/pip-ca"]
        if HOST_CA.is_file()
        else []
    )
    for target in TARGETS:
        podman.run(
            "build", "--format", "docker", "--target", target, "-t", f"frugal/{target}:{TAG}",
            "--build-arg", f"BASE_IMAGE={PYTHON}", *secret, str(REPO_ROOT),
            timeout=1800,
        )  # fmt: skip


def _wait_until_serving(stack: ComposeStack, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{stack.api_url}/v1/models", timeout=3)
            admin = httpx.get(f"{stack.admin_url}/admin/v1/status", headers=_auth(stack), timeout=3)
            if models.status_code == 200 and admin.status_code == 200:
                return
            last = f"{models.status_code} / {admin.status_code}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(1)
    logs = stack.compose("logs", "--tail", "30", timeout=60)
    raise AssertionError(f"the compose stack did not serve in {seconds:.0f} s ({last}):\n{logs}")


def _auth(stack: ComposeStack) -> dict[str, str]:
    return {"authorization": f"Bearer {stack.admin_token}"}


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    podman = Podman(CACHE / "podman")
    standins = ensure_standins(podman)
    _build_images(podman)
    secrets = REPO_ROOT / "deploy/compose/secrets"
    subprocess.run(
        [str(REPO_ROOT / ".venv/bin/python"), "-m", "frugal.deploy", "secrets", str(secrets)],
        check=True,
        capture_output=True,
    )
    override = tmp_path_factory.mktemp("compose") / "engine-cpu-standin.yaml"
    override.write_text(OVERRIDE)
    api_port, admin_port = free_port(), free_port()
    env = {
        **podman.env,
        **standins,
        "FRUGAL_PYTHON_IMAGE": PYTHON,
        "FRUGAL_TAG": TAG,
        "FRUGAL_API_PORT": str(api_port),
        "FRUGAL_ADMIN_PORT": str(admin_port),
    }
    stack = ComposeStack(
        podman,
        env,
        (REPO_ROOT / "compose.yaml", override),
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{admin_port}",
        (secrets / "admin-token").read_text().strip(),
    )
    stack.remove()  # what an interrupted run left
    try:
        stack.compose("up", "-d", "--no-build")
        _wait_until_serving(stack)
        yield stack
    finally:
        stack.remove()
    assert not stack.project_containers(), "every container of the project is gone"


@pytest.fixture(scope="module")
def api_key(compose_stack: ComposeStack) -> str:
    created = httpx.post(
        f"{compose_stack.admin_url}/admin/v1/keys",
        headers=_auth(compose_stack),
        json={"name": "compose-test", "tenant": "ci"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def test_the_sdk_gets_unary_and_streamed_answers_through_the_published_port(
    compose_stack: ComposeStack, api_key: str
) -> None:
    client = openai.OpenAI(base_url=f"{compose_stack.api_url}/v1", api_key=api_key, max_retries=0)
    text = "Hello from compose, mail bob@example.com"
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": text}
    ]
    answer = client.chat.completions.create(model="sim-echo", messages=messages)
    assert answer.choices[0].message.content == "Hello from compose, mail [REDACTED:EMAIL]"
    stream = client.chat.completions.create(model="sim-echo", messages=messages, stream=True)
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == "Hello from compose, mail [REDACTED:EMAIL]"
    assert chunks[-1].choices[0].finish_reason == "stop"
    models = {m.id for m in client.models.list()}
    assert {"sim-echo", "sim-mixtral", "smollm2-135m-instruct"} <= models


def test_a_bad_key_gets_an_openai_error(compose_stack: ComposeStack) -> None:
    client = openai.OpenAI(
        base_url=f"{compose_stack.api_url}/v1", api_key="sk-frugal-nope", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(
            model="sim-echo", messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 401
    body = refused.value.body
    assert isinstance(body, dict) and {"message", "type", "code"} <= set(body)


async def _chat_many(
    compose_stack: ComposeStack, api_key: str, count: int
) -> list[tuple[int, str]]:
    body = {"model": "sim-mixtral", "messages": [{"role": "user", "content": "go"}]}
    headers = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=compose_stack.api_url, headers=headers, timeout=60) as c:
        answers = await asyncio.gather(
            *(c.post("/v1/chat/completions", json=body) for _ in range(count))
        )
    return [(a.status_code, a.text if a.status_code != 200 else "") for a in answers]


def test_scaled_services_get_traffic_without_a_config_edit(
    compose_stack: ComposeStack, api_key: str
) -> None:
    admin = httpx.Client(base_url=compose_stack.admin_url, headers=_auth(compose_stack))
    # All of sim-mixtral's traffic to the group that is scaled, so its share is easy to see.
    group = "/admin/v1/models/sim-mixtral"
    assert admin.put(f"{group}/balancer", json={"type": "static"}).status_code == 200
    assert admin.patch(f"{group}/groups/tp8", json={"weight": 0}).status_code == 200
    assert len(compose_stack.containers("safety-filter")) == 2  # compose.yaml's replicas
    compose_stack.compose("up", "-d", "--no-build", "--scale", "engine-tp2=2")
    compose_stack.compose("up", "-d", "--no-build", "--scale", "safety-filter=3")
    engines = compose_stack.containers("engine-tp2")
    filters = compose_stack.containers("safety-filter")
    assert len(engines) == 2 and len(filters) == 3

    def listed() -> int:
        models = admin.get("/admin/v1/models").json()["data"]
        mixtral = next(m for m in models if m["name"] == "sim-mixtral")
        tp2 = next(g for g in mixtral["groups"] if g["name"] == "tp2")
        return sum(1 for r in tp2["replicas"] if r["healthy"])

    deadline = time.monotonic() + 60
    while listed() < 2:  # found by DNS (every 5 s), then healthy in Envoy
        assert time.monotonic() < deadline, "the second tp2 replica was never found healthy"
        time.sleep(1)
    # Envoy resolves the safety filter's name every 5 s (STRICT_DNS) and sends a new
    # filter nothing before its gRPC health check passes.
    while compose_stack.envoy_healthy_hosts(SAFETY_FILTER_CLUSTER) < 3:
        assert time.monotonic() < deadline, "Envoy never had three healthy safety filters"
        time.sleep(1)
    # Envoy's admin lists a host healthy up to a second (update_merge_window) before its
    # worker threads balance onto it: send rounds of requests until every container has some.
    # A round that fails is a lost request; a container left without traffic is a miss.
    deadline = time.monotonic() + 30
    while True:
        answers = asyncio.run(_chat_many(compose_stack, api_key, 40))
        assert [status for status, _ in answers] == [200] * 40, answers
        generated = [
            compose_stack.metric(name, 51062, "frugal_engine_generation_tokens_total")
            for name in engines
        ]
        turns = [compose_stack.metric(name, 9110, "frugal_extproc_turns_total") for name in filters]
        if all(tokens > 0 for tokens in generated) and all(count > 0 for count in turns):
            break
        seen = dict(zip([*engines, *filters], [*generated, *turns], strict=True))
        assert time.monotonic() < deadline, f"a scaled container never got traffic: {seen}"
    admin.close()


def test_the_images_run_as_a_non_root_user(compose_stack: ComposeStack) -> None:
    for target in TARGETS:
        user = compose_stack.podman.run(
            "image", "inspect", "--format", "{{.Config.User}}", f"frugal/{target}:{TAG}"
        ).stdout.strip()
        assert user == "frugal", (target, user)
    info = json.loads(compose_stack.podman.run("info", "--format", "json").stdout)
    assert info["host"]["ociRuntime"]["name"] == "runc"  # this machine's only working runtime
