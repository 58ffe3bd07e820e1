"""The playbook and README show the toolkit as it is (issue #13, item 9): indexes
before the first reconcile scan, NOT NULL author columns never set to NULL, the new
options documented."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = (REPO / "docs" / "fk-removal-playbook.md").read_text()
README = (REPO / "README.md").read_text()


def test_indexes_are_built_before_the_first_reconcile_scan() -> None:
    first_reconcile = PLAYBOOK.index("auth-toolkit reconcile ")
    indexes = PLAYBOOK.find("--indexes-only")
    assert 0 <= indexes < first_reconcile


def test_not_null_author_columns_are_anonymised_never_set_null() -> None:
    for column in ("created_by", "sender_id"):
        assert not re.search(rf"SET {column} = NULL", PLAYBOOK), column
    assert "TOMBSTONE" in PLAYBOOK


def test_the_new_options_are_documented() -> None:
    commands = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    options = (
        "--schema", "--exclude-table", "--migration-format", "--lock-timeout",
        "--lock-retries", "--indexes-only", "--check-restore", "--max-orphan-fraction",
        "--allow-cascade",
    )  # fmt: skip
    for option in options:
        assert option in commands, option
        assert option in PLAYBOOK, option
    for code in ("3 refused", "4 stopped at `--max-batches`", "130"):
        assert code in PLAYBOOK, code


def test_the_playbook_starts_with_the_rehearsal() -> None:
    """Issue #28: the first section and the first command are the rehearsal."""
    first_section = PLAYBOOK.split("\n## ", 2)[1]
    assert first_section.startswith("0. Rehearse")
    first_command = re.search(r"\.venv/bin/(auth-toolkit \S+)", PLAYBOOK)
    assert first_command is not None
    assert first_command.group(1) == "auth-toolkit rehearse"
    from auth_client.toolkit.cli import build_parser  # noqa: PLC0415 - loads asyncpg

    rehearse = build_parser()._subparsers._group_actions[0].choices["rehearse"]  # type: ignore[union-attr]
    for action in rehearse._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if flags and flags[0] not in {"--help", "--token", "--timeout", *TLS_FLAGS}:
            assert flags[0] in first_section, flags[0]
    for field in ("source_unchanged", "rollback_ok", "lock_wait_ms_max", "write_p99_ms"):
        assert f"`{field}`" in first_section, field


TLS_FLAGS = {"--tls", "--ca-file", "--server-name", "--cert-file", "--key-file"}
