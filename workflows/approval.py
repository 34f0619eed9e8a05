"""Whether a decision is the operator's: its signature, over what it decides, against the public
key the run recorded (cli.approval). Pure: a signature check is computation, so workflow code may
make it, and replaying it gives the same answer.

Workflow code imports this module passed through the sandbox (see `_load_native_errors`)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def decision_message(approved: bool, workflow_id: str, task_id: str, commit: str) -> bytes:
    """What a signature covers: the decision, the run, the task (any case) and its commit."""
    decision = "approve" if approved else "reject"
    return f"{decision}\0{workflow_id}\0{task_id.lower()}\0{commit}".encode()


def from_operator(
    approver: str | None,
    token: str | None,
    approved: bool,
    run: str,
    task_id: str,
    commit: str,
    digest: str | None = None,
) -> bool:
    """True when `token` is the approver's signature of this decision on this commit; for a
    run from before decisions were signed, when the token hashes to the task's recorded
    `digest`, or the run recorded neither (it started before approvals had tokens)."""
    if approver is None:
        if digest is None:
            return True
        sent = hashlib.sha256((token or "").encode()).hexdigest()
        return bool(token) and hmac.compare_digest(sent, digest)
    if not token:
        return False
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(approver))
        public.verify(bytes.fromhex(token), decision_message(approved, run, task_id, commit))
    except (InvalidSignature, ValueError):
        return False
    return True


def _load_native_errors() -> None:
    """The library's native code looks InvalidSignature up through the import system the first
    time it raises it, and keeps it. Done inside the workflow sandbox that lookup fails and the
    native side aborts the whole worker; so it is raised once here, when the module is imported,
    which workflow code does passed through (outside the sandbox)."""
    try:  # noqa: SIM105 (workflow modules import only what is deterministic)
        Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().verify(bytes(64), b"")
    except InvalidSignature:
        pass


_load_native_errors()
