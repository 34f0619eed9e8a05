"""Whether a decision comes from the operator: its token against the digest the run recorded.
Pure (hashing is deterministic), so workflow code may call it."""

from __future__ import annotations

import hashlib
import hmac


def from_operator(digest: str | None, token: str | None) -> bool:
    """True when the run recorded no digest (it started before approvals had tokens) or the
    token hashes to it."""
    if digest is None:
        return True
    if not token:
        return False
    return hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), digest)
