"""Operations' pure parts: the dashboard and the README name the metrics the code records, log
context from workflow ids, notification bodies and receivers, the tasks query."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from autonomous_pipeline.activities.notify import body_for, receiver_key
from autonomous_pipeline.cli.logs import context_of, formatter, ids_of
from autonomous_pipeline.cli.notify import notify_config
from autonomous_pipeline.cli.runs import tasks_query
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.notify import Notice, NoticeKind
from autonomous_pipeline.models.search import create_commands
from autonomous_pipeline.workflows import metrics
from tests.conftest import ROOT

SUFFIXES = re.compile(r"_(total|bucket|sum|count)$")


def test_the_dashboard_charts_every_metric_the_pipeline_records_and_no_other() -> None:
    dash = json.loads((ROOT / "deploy" / "grafana" / "pipeline.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    named = {SUFFIXES.sub("", n) for e in exprs for n in re.findall(r"pipeline_\w+", e)}
    assert named == set(metrics.ALL)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


def test_the_readme_documents_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [m for m in metrics.ALL if f"`{m}" not in readme]
    assert not missing, missing


@pytest.mark.parametrize(
    ("wid", "run", "task"),
    [
        ("pipeline-demo-0123", "pipeline-demo-0123", None),
        ("pipeline-demo-0123/task-2.1", "pipeline-demo-0123", "2.1"),
        ("pipeline-demo-0123/task-2.1/try-3", "pipeline-demo-0123", "2.1"),
    ],
)
def test_a_lines_run_and_task_come_from_the_workflow_id(wid: str, run: str, task: str) -> None:
    assert ids_of(wid) == (run, task)


def test_an_activitys_lines_say_its_phase() -> None:
    ctx = context_of("pipeline-x/task-1.2/try-3", "run_agent", 2)
    assert ctx == {"run": "pipeline-x", "task": "1.2", "try": 3, "activity": "run_agent",
                   "phase": "agent", "attempt": 2}  # fmt: skip
    assert context_of("pipeline-x", None, 1) == {"run": "pipeline-x", "attempt": 1}


NOTICE = Notice(
    id="pipeline-x#finished", kind=NoticeKind.RUN_FINISHED, run="pipeline-x",
    title="Run failed: <x> & co", text="1 failed", link="http://ui/x",
)  # fmt: skip


def test_slack_gets_its_own_markup_and_anything_else_plain_json() -> None:
    slack = body_for("https://hooks.slack.com/services/T/B/C", NOTICE)
    assert set(slack) == {"text"} and "&lt;x&gt; &amp; co" in slack["text"]
    assert "<http://ui/x|Open in the Temporal Web UI>" in str(slack["text"])
    plain = body_for("https://example.com/hook", NOTICE)
    assert plain["kind"] == "run_finished" and plain["id"] == NOTICE.id
    assert plain["text"] == "Run failed: <x> & co\n1 failed\nhttp://ui/x"


def test_a_receiver_is_recorded_by_digest_never_by_its_url() -> None:
    url = "https://hooks.slack.com/services/T0/B0/secretsecret"
    assert "secret" not in receiver_key(url) and receiver_key(url) == receiver_key(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://x/y", "not an http(s) URL"),
        ("https://user:pw@hooks.example/x", "credentials"),
        ("env:1BAD", "variable name"),
        ("hooks.example/x", "not an http(s) URL"),
        ("http://[::1", "not a URL"),
        ("https://h:abc/x", "not a URL"),
        ("https://h/x\n", "no spaces or control characters"),
        (
            "https://hooks.slack.com/services/T0/B0/XYZ",
            "hooks.slack.com webhook URL is a credential",
        ),
        ("https://discord.com/api/webhooks/1/abc", "is a credential"),
        ("https://ci.example/hook?token=abc", "token in its query"),
    ],
)
def test_a_receiver_that_cannot_be_one_is_refused_with_why(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=re.escape(why)):
        notify_config([url])


def test_receivers_are_kept_once_in_order() -> None:
    config = notify_config(["https://a/1", "env:HOOK", "https://a/1", "https://a/2?team=x"])
    assert config is not None and config.urls == ["https://a/1", "env:HOOK", "https://a/2?team=x"]
    assert notify_config([]) is None


def test_the_tasks_query_quotes_what_it_is_given() -> None:
    q = tasks_query("failed", "pipeline/o'brien", None)
    assert "PipelineStatus='failed'" in q and "PipelineTarget='pipeline/o\\'brien'" in q
    assert q.startswith("WorkflowType='TaskWorkflow'")


def test_a_cluster_is_told_one_command_per_kind() -> None:
    keyword, double = create_commands("prod")
    assert "--type Keyword" in keyword and "--name PipelineStatus" in keyword
    assert double.endswith("--name PipelineCostUsd --type Double")


def test_an_agents_words_ping_no_one_in_a_chat() -> None:
    loud = NOTICE.model_copy(update={"text": "fatal <!channel> @here @everyone see <!here|x>"})
    text = str(body_for("https://example.com/hook", loud)["text"])
    assert "@here" not in text and "@everyone" not in text and "<!" not in text
    slack = str(body_for("https://hooks.slack.com/services/T/B/C", loud)["text"])
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack


def test_secrets_are_masked_in_every_kind_of_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "dpl-3c5e7a9b1d2f4e60"
    monkeypatch.setenv("DEPLOY_TOKEN", token)
    record = logging.getLogger("t").makeRecord(
        "t", logging.WARNING, __file__, 1, "said", (), None,
        extra={"by_key": {token: 1}, "as_set": {token}, "as_bytes": token.encode(),
               "as_object": Path(f"/x/{token}")},
    )  # fmt: skip
    line = formatter(json_lines=True).format(record)
    assert token not in line and line.count("***") >= 4, line
