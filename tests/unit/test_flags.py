"""The command line is built from the Settings model: every setting once, typed, with its default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autonomous_pipeline.cli.flags import flagged
from autonomous_pipeline.cli.main import build_control_parser, build_parser, settings_from
from autonomous_pipeline.config import Settings
from autonomous_pipeline.errors import UsageError
from autonomous_pipeline.models.run import Approval, RunOptions


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PIPELINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_every_setting_but_the_environment_only_ones_has_a_flag() -> None:
    assert {name for name, _, _ in flagged()} == set(Settings.model_fields) - {"ui_url"}


def test_flags_parse_into_typed_settings() -> None:
    args = build_parser().parse_args(
        ["--approval", "large", "--no-confine", "--max-fix-rounds", "3", "--json", "--dry-run"]
    )
    s = settings_from(args)
    assert s.approval is Approval.LARGE
    assert (s.confine, s.max_fix_rounds, s.json_output, s.dry_run) == (False, 3, True, True)
    # Flags not given leave the setting to the environment and the defaults.
    assert s.max_concurrent == RunOptions.model_fields["max_concurrent"].default


def test_a_closed_choice_is_refused_by_the_parser_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--approval", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    monkeypatch.setenv("PIPELINE_APPROVAL", "sometimes")
    with pytest.raises(UsageError) as info:
        settings_from(build_parser().parse_args([]))
    assert "approval" in str(info.value) and "'never'" in str(info.value)


def test_help_shows_the_run_defaults_from_the_run_input() -> None:
    text = build_parser().format_help().replace("\n", " ")
    for flag, field in (
        ("--max-fix-rounds", "max_fix_rounds"),
        ("--verify-timeout", "verify_timeout_s"),
    ):
        default = RunOptions.model_fields[field].default
        after = " ".join(text.split(flag + " ", 2)[2].split())
        assert f"(default {default})" in after.split("--", 1)[0], after[:200]


def test_subcommands_take_the_common_settings_only() -> None:
    parser = build_control_parser("status")
    s = settings_from(
        parser.parse_args(["RUN", "--address", "h:1", "--json"]),
        skip=("workflow_id", "task"),
    )
    assert (s.address, s.json_output) == ("h:1", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["RUN", "--max-concurrent", "3"])


def test_settings_come_only_from_pipeline_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSON", "1")  # a variable of the user's shell, not ours
    assert settings_from(build_parser().parse_args([])).json_output is False
    monkeypatch.setenv("PIPELINE_JSON_OUTPUT", "1")
    assert settings_from(build_parser().parse_args([])).json_output is True
