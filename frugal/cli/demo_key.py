"""The demo API key `frugal up` prints: created once through the admin REST, reused after.

I/O layer. Its plaintext is kept in a 0600 file beside the stack's other secrets
(Redis holds only its peppered hash), so every start can print the same key.
"""

from __future__ import annotations

import httpx

from frugal.cli.stack import StackFiles
from frugal.keys.format import parse_key
from frugal.keys.hashing import write_secret_file

DEMO_KEY_SPEC = {"name": "demo", "tenant": "demo", "rpm": 600, "tpm": 1_000_000}


async def ensure_demo_key(admin_url: str, files: StackFiles) -> str:
    token = files.admin_token.read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=admin_url, headers=headers, timeout=5.0) as admin:
        if files.demo_key.exists():
            key = files.demo_key.read_text().strip()
            parsed = parse_key(key)
            if parsed is not None:
                response = await admin.get(f"/admin/v1/keys/{parsed.key_id}")
                if response.status_code == 200 and response.json().get("status") == "active":
                    return key
            files.demo_key.unlink()
        response = await admin.post("/admin/v1/keys", json=DEMO_KEY_SPEC)
        response.raise_for_status()
        key = str(response.json()["key"])
    write_secret_file(files.demo_key, key + "\n")
    return key
