"""Approvals are a person's act: the operator's key signs each decision, for one commit.

The key is an Ed25519 key in the pipeline's configuration folder (`approver.key`, readable by
its owner only, made on first use), which no sandbox can see. A run's input records its public
half. `approve` and `reject` carry a signature over the decision, the run, the task and the
commit waiting for approval; the task's workflow checks it against the public key, so:

- a decision without the operator's signature (an agent that got out, a script) does nothing;
- a signature seen in history serves nothing more: not another task, not a later gate of the
  same task (a conflict fix waits again, for another commit), not a later run of the plan.

The same key also signs a run's request to weaken its sandbox (`sandbox_grant`), which a worker
holding the key honours (backends.sandboxes.policy).

`starter.py approval-token RUN TASK` prints the signature, for `temporal workflow signal`.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from autonomous_pipeline.config import config_dir
from autonomous_pipeline.workflows.approval import decision_message

KEY_FILE = "approver.key"


def key_path() -> Path:
    return config_dir() / KEY_FILE


def _read(path: Path) -> bytes | None:
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return raw if len(raw) == 32 else None


def approver_key() -> bytes:
    """The operator's private key (32 bytes), made on first use (0600, in a 0700 folder)."""
    path = key_path()
    if (raw := _read(path)) is not None:
        return raw
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = Ed25519PrivateKey.generate().private_bytes_raw()
    tmp = path.with_name(f"{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(fresh.hex() + "\n")
    try:
        os.link(tmp, path)  # the first starter to get there wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    raw = _read(path)
    if raw is None:
        raise OSError(f"{path} does not hold an approval key")
    return raw


def existing_key() -> bytes | None:
    """The operator's key if this machine's user has one; never makes one (workers)."""
    return _read(key_path())


def public_key(key: bytes) -> str:
    """What a run's input records: the public half, hex."""
    private = Ed25519PrivateKey.from_private_bytes(key)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def sign_decision(key: bytes, approved: bool, workflow_id: str, task_id: str, commit: str) -> str:
    private = Ed25519PrivateKey.from_private_bytes(key)
    return private.sign(decision_message(approved, workflow_id, task_id, commit)).hex()
