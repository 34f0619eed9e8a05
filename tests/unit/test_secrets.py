"""Secrets: what reaches agents, and masking in output, transcripts, payloads, failures, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DefaultPayloadConverter
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.backends._proc import run_process
from autonomous_pipeline.backends.secrets import (
    Redactor,
    agent_env,
    env_names,
    redactor,
    secret_values,
)
from autonomous_pipeline.cli.logs import formatter
from autonomous_pipeline.cli.redaction import (
    RedactingCodec,
    RedactingFailureConverter,
    data_converter,
)
from autonomous_pipeline.models.activity_io import RunAgentOut, VerifyIn
from autonomous_pipeline.models.steer import RunInfo

TOKEN = "tok-3f9a1c77e2b54d0e"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DEPLOY_TOKEN", TOKEN)
    return TOKEN


def test_env_names_accepts_lists_and_refuses_bad_names() -> None:
    assert env_names("A, B_2 ,A\tC") == ["A", "B_2", "C"]
    assert env_names(["X"]) == ["X"] and env_names(None) == []
    with pytest.raises(ValueError, match="'1BAD'"):
        env_names("OK,1BAD")


def test_agent_env_is_the_allow_list_plus_named_variables() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "AWS_SECRET_ACCESS_KEY": "x" * 20, "NEEDED": "1"}
    assert agent_env(["NEEDED", "ABSENT"], environ) == {"PATH": "/bin", "HOME": "/h", "NEEDED": "1"}


def test_secret_values_by_name_pattern_and_by_setting() -> None:
    environ = {
        "GITHUB_TOKEN": "ghp_abcdefghijkl",
        "SHORT_KEY": "abc",  # too short to mask safely
        "DATABASE_URL": "postgres://u:pw@db/x",  # not credential-looking by name...
        "PIPELINE_SECRET_ENV": "DATABASE_URL",  # ...but named as a secret
        "HOME": "/home/someone",
    }
    assert secret_values(environ) == ["postgres://u:pw@db/x", "ghp_abcdefghijkl"]


def test_redactor_masks_text_bytes_and_json_escaped_forms() -> None:
    mask = Redactor(['pa"ss\\word-123', "abc12345"])
    assert mask("x abc12345 y") == "x *** y"
    assert mask.bytes(json.dumps({"v": 'pa"ss\\word-123'}).encode()) == b'{"v": "***"}'
    # A secret split across two chunks is found if its longest form (hex) is held back.
    assert not Redactor([]) and Redactor(["abcdefgh"]).overlap == 15


def test_encoded_secrets_are_masked_and_found_at_any_alignment() -> None:
    import base64

    mask = Redactor([TOKEN])
    for prefix in (b"", b"a", b"ab", b"abc"):
        encoded = base64.b64encode(prefix + TOKEN.encode() + b" tail").decode()
        assert mask.found(encoded.encode()), prefix
        assert TOKEN not in mask(encoded) and "***" in mask(encoded)
    assert mask(f"hex {TOKEN.encode().hex()} end") == "hex *** end"
    assert not mask.found(base64.b64encode(b"nothing secret here at all"))


def test_plain_words_are_not_taken_for_secrets() -> None:
    environ = {"POSTGRES_PASSWORD": "postgres", "API_KEY": "changeme", "DB_PASSWORD": "s3cr3t-pw"}
    assert secret_values(environ) == ["s3cr3t-pw"]


async def test_process_output_is_masked_across_chunks_lines_and_the_transcript(
    tmp_path: Path, planted: str
) -> None:
    # The secret is written in two halves, flushed apart: it arrives split across reads.
    half = len(planted) // 2
    code = (
        "import sys, time\n"
        f"sys.stdout.write('key=' + {planted[:half]!r}); sys.stdout.flush(); time.sleep(0.3)\n"
        f"sys.stdout.write({planted[half:]!r} + ' end\\n'); sys.stdout.flush()\n"
        f"sys.stdout.write('x' * 200000 + {planted!r})\n"
    )
    lines: list[str] = []
    transcript = tmp_path / "t.log"
    res = await run_process(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        transcript=transcript,
        on_line=lines.append,
        tail_chars=300_000,
    )
    assert res.ok
    assert lines[0] == "key=*** end" and lines[1].endswith("x***")
    assert planted not in res.output and res.output.startswith("key=*** end\n")
    assert planted.encode() not in transcript.read_bytes()


def _sent(value: object) -> Payload:
    converter = data_converter()
    (payload,) = asyncio.run(converter.encode([value]))
    return payload


def test_reports_leaving_the_process_are_masked(planted: str) -> None:
    report = RunAgentOut(exit_code=1, succeeded=False, summary=f"curl -H {planted}")
    out = _sent(report)
    assert planted.encode() not in out.data and b"***" in out.data
    # Decoding changes nothing: the masked text is what the history holds.
    assert asyncio.run(RedactingCodec().decode([out])) == [out]
    assert _sent("nothing secret").data == b'"nothing secret"'


def test_what_the_pipeline_acts_on_is_never_rewritten(planted: str) -> None:
    # A repository path or a check that holds a secret's value must reach the step as written.
    check = VerifyIn(
        run_key="r", task_id="1.1", commands=[f"grep -q {planted} app.conf"], base_commit="c"
    )
    out = _sent(check)
    assert planted.encode() in out.data
    # The run's start memo too: the next command compares its repository with this one.
    assert (
        planted.encode()
        in _sent(RunInfo(plan="p.md", repo=f"/srv/{planted}-app", target_branch="t")).data
    )
    assert data_converter().payload_converter.from_payload(out, VerifyIn) == check


def test_failures_are_masked_with_their_causes(planted: str) -> None:
    try:
        try:
            raise ValueError(f"inner {planted}")
        except ValueError as inner:
            raise ApplicationError(f"outer {planted}", type="GitError") from inner
    except ApplicationError as exc:
        failure = Failure()
        RedactingFailureConverter().to_failure(exc, DefaultPayloadConverter(), failure)
    assert failure.message == "outer ***" and failure.cause.message == "inner ***"
    assert planted not in failure.stack_trace + failure.cause.stack_trace


def test_log_records_are_masked_with_their_arguments_and_tracebacks(planted: str) -> None:
    try:
        raise RuntimeError(planted)
    except RuntimeError:
        record = logging.getLogger("t").makeRecord(
            "t", logging.WARNING, __file__, 1, "agent said %s", (planted,), sys.exc_info()
        )
    for json_lines in (True, False):
        text = formatter(json_lines).format(record)
        assert planted not in text and "agent said ***" in text and "RuntimeError: ***" in text


def test_the_redactor_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOY_TOKEN", raising=False)
    assert TOKEN not in redactor().secrets
    monkeypatch.setenv("DEPLOY_TOKEN", TOKEN)
    assert TOKEN in redactor().secrets
    assert "other-secret-1" in redactor({"X_API_KEY": "other-secret-1"}).secrets


def test_a_secret_of_digits_never_breaks_a_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    # Named a secret, all digits: in a number it must stay, or the payload no longer decodes.
    monkeypatch.setenv("PIPELINE_SECRET_ENV", "PIN")
    monkeypatch.setenv("PIN", "345678")
    report = RunAgentOut(exit_code=0, succeeded=True, duration_s=12.345678, summary="pin 345678")
    out = _sent(report)
    back = data_converter().payload_converter.from_payload(out, RunAgentOut)
    assert back.duration_s == 12.345678 and back.summary == "pin ***"


def test_a_reviewer_cannot_unmask_a_secret_with_json_escapes(planted: str) -> None:
    from autonomous_pipeline.backends.review import parse_verdict

    escaped = "".join(f"\\u{ord(c):04x}" for c in planted)
    verdict = parse_verdict(
        '{"approved": false, "summary": "see ' + escaped + '", '
        '"findings": [{"file": "' + escaped + '.py", "message": "leaks ' + escaped + '"}]}'
    )
    (finding,) = verdict.findings
    assert (finding.file, finding.message, verdict.summary) == ("***.py", "leaks ***", "see ***")
