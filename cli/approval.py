"""Approvals are a person's act: the operator's key, and a token per task derived from it.

The key lives in the pipeline's configuration folder (`approver.key`, readable by its owner
only), which no sandbox can see. When a run starts, its input records, for every task, the
SHA-256 of that task's token (an HMAC of the run's id and the task's id under the key); the
workflows take `approve` and `reject` only with a token whose digest matches. An agent that
reaches the control plane anyway cannot approve: the input holds digests, not tokens, and a
token seen in history after an approval serves only that task.

`starter.py approval-token RUN TASK` prints a task's token, for `temporal workflow signal`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from config import config_dir

KEY_FILE = "approver.key"


def key_path() -> Path:
    return config_dir() / KEY_FILE


def approver_key() -> bytes:
    """The operator's key, made on first use (0600, in a 0700 folder)."""
    path = key_path()
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f"{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    try:
        os.link(tmp, path)  # the first starter to get there wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def approval_token(key: bytes, workflow_id: str, task_id: str) -> str:
    # Task ids match without regard to case, as the steering commands do.
    message = f"{workflow_id}\0{task_id.lower()}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def approval_digests(key: bytes, workflow_id: str, task_ids: list[str]) -> dict[str, str]:
    """What a run's input records: the digest of each task's token."""
    return {
        tid: hashlib.sha256(approval_token(key, workflow_id, tid).encode()).hexdigest()
        for tid in task_ids
    }
