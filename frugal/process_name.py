"""A name for this process that no other process of a deployment shares (pure but for the host
name, the pid and the random part): the balancer lease's holder, the picker roster's member."""

from __future__ import annotations

import os
import socket
import uuid


def process_name() -> str:
    """Host, process and a random part: unique per process, readable in Redis."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
