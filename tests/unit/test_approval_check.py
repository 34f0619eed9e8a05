"""Whether a decision is the operator's (workflows.approval), for runs of every vintage."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from autonomous_pipeline.cli.approval import public_key, sign_decision
from autonomous_pipeline.workflows.approval import from_operator

COMMIT = "c" * 40


def test_a_signed_run_takes_only_the_operators_signature_for_that_decision() -> None:
    key = Ed25519PrivateKey.generate().private_bytes_raw()
    pub = public_key(key)
    good = sign_decision(key, True, "run", "1.1", COMMIT)
    assert from_operator(pub, good, True, "run", "1.1", COMMIT)
    assert not from_operator(pub, good, False, "run", "1.1", COMMIT)  # not a rejection
    assert not from_operator(pub, good, True, "run", "1.2", COMMIT)  # nor another task
    assert not from_operator(pub, good, True, "run", "1.1", "d" * 40)  # nor another commit
    assert not from_operator(pub, None, True, "run", "1.1", COMMIT)
    assert not from_operator(pub, "zz", True, "run", "1.1", COMMIT)


def test_a_run_from_before_signatures_still_needs_its_token() -> None:
    # Started when approvals carried a token: the run recorded its SHA-256 per task.
    digest = hashlib.sha256(b"the-old-token").hexdigest()
    assert from_operator(None, "the-old-token", True, "run", "1.1", COMMIT, digest)
    assert not from_operator(None, None, True, "run", "1.1", COMMIT, digest)
    assert not from_operator(None, "guess", True, "run", "1.1", COMMIT, digest)
    # Older still: no token was ever asked for.
    assert from_operator(None, None, True, "run", "1.1", COMMIT)
