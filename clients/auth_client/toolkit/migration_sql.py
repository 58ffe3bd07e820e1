"""The SQL the emitted migrations are made of, whatever the migration tool: quoting,
lock waits with a bounded retry, and a restore that never stops half-way.

Every migration tool the toolkit writes for (dbmate, sqlx, golang-migrate) sends a
file to PostgreSQL as one string; PostgreSQL runs a multi-statement string as one
implicit transaction unless it holds explicit `BEGIN` / `COMMIT`. So each step here
is its own `BEGIN; ...; COMMIT;` and the file runs outside the tool's transaction.

- `locked()`: a DO block that runs one DDL statement with `lock_timeout`, and on
  `lock_not_available` waits (capped exponential backoff with jitter, the formula
  of `auth_client.backoff`, written in SQL since it runs in the database) and tries
  again, at most `retries` times; then the error names the table.
- `restore_statements()`: phase 1 adds every constraint `NOT VALID`; phase 2
  validates each. A validation that fails is recorded with the number of rows that
  violate it, the others go on, and the last statement fails naming every
  constraint left NOT VALID: every constraint is present whatever happens.
- `violation_count_sql()`: the rows that would fail `VALIDATE CONSTRAINT`, also used
  by `fk-audit --check-restore` before a rollback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auth_client.toolkit.audit import ForeignKey

_TIMEOUT = re.compile(r"[1-9][0-9]*(ms|s|min)")
_FAILURES = "auth_toolkit.restore_failures"  # a session setting that collects failures


def quote_ident(name: str) -> str:
    """Always-quoted SQL identifier (used for index names the toolkit invents)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal, correct whatever standard_conforming_strings is."""
    body = text.replace("'", "''")
    if "\\" in body:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """How long one DDL statement may wait for its lock, and how often it is tried
    again after `lock_not_available` (0 = fail at the first timeout)."""

    timeout: str = "5s"
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not _TIMEOUT.fullmatch(self.timeout):
            raise ValueError("--lock-timeout must look like 500ms, 5s or 1min")
        if not 0 <= self.retries <= 100:
            raise ValueError("--lock-retries must be 0 to 100")

    def describe(self) -> str:
        return (
            f"lock_timeout {self.timeout}, up to {self.retries} retries "
            f"(backoff {self.backoff_s:g} s doubling to {self.max_backoff_s:g} s, with jitter)"
        )


def _dollar_tag(body: str) -> str:
    tag, n = "$fk$", 0
    while tag in body:
        n += 1
        tag = f"$fk{n}$"
    return tag


def locked(
    statement: list[str], what: str, policy: LockPolicy, on_violation: list[str] | None = None
) -> list[str]:
    """`BEGIN; DO ...; COMMIT;` running `statement` (PL/pgSQL lines) under `policy`.
    `on_violation`: PL/pgSQL run instead of failing on foreign_key_violation."""
    label = quote_literal(what)
    body = [
        "DECLARE attempt int := 0;",
        "BEGIN",
        "  LOOP",
        "    BEGIN",
        f"      PERFORM pg_catalog.set_config('lock_timeout', '{policy.timeout}', true);",
        *(f"      {line}" for line in statement),
        "      EXIT;",
        "    EXCEPTION",
        "      WHEN lock_not_available THEN",
        "        attempt := attempt + 1;",
        f"        IF attempt > {policy.retries} THEN",
        "          RAISE EXCEPTION 'auth-toolkit: % still locked after % attempt(s) of lock_timeout %',",
        f"            {label}, attempt, '{policy.timeout}' USING ERRCODE = 'lock_not_available';",
        "        END IF;",
        "        RAISE WARNING 'auth-toolkit: % is locked; retry % of % after a pause',",
        f"          {label}, attempt, {policy.retries};",
        (
            f"        PERFORM pg_catalog.pg_sleep(LEAST({policy.max_backoff_s:g},"
            f" {policy.backoff_s:g} * 2 ^ (attempt - 1)) * (0.5 + pg_catalog.random() / 2));"
        ),
    ]
    if on_violation is not None:
        body += ["      WHEN foreign_key_violation THEN", *(f"        {x}" for x in on_violation)]
        body += ["        EXIT;"]
    body += ["    END;", "  END LOOP;", "END"]
    tag = _dollar_tag("\n".join(body))
    return ["BEGIN;", f"DO {tag}", *body, f"{tag};", "COMMIT;"]


def violation_count_sql(fk: ForeignKey) -> str:
    """SELECT count(*) of the rows of `fk`'s table that VALIDATE CONSTRAINT rejects."""
    t = [f"t.{c}" for c in fk.sql_columns]
    match = " AND ".join(
        f"r.{rc} = {c}" for c, rc in zip(t, fk.sql_referenced_columns, strict=True)
    )
    missing = f"NOT EXISTS (SELECT FROM {fk.sql_referenced_table} r WHERE {match})"
    all_set = " AND ".join(f"{c} IS NOT NULL" for c in t)
    if fk.match == "FULL":  # some columns NULL and others not is a violation too
        any_set = " OR ".join(f"{c} IS NOT NULL" for c in t)
        where = f"({any_set}) AND (NOT ({all_set}) OR {missing})"
    else:
        where = f"{all_set} AND {missing}"
    return f"SELECT count(*) FROM {fk.sql_table} t WHERE {where}"  # noqa: S608 - catalog names


def _exists(fk: ForeignKey) -> str:
    return (
        "SELECT FROM pg_catalog.pg_constraint WHERE conrelid = "
        f"{quote_literal(fk.sql_table)}::pg_catalog.regclass"
        f" AND conname = {quote_literal(fk.constraint)}"
    )


def drop_statements(fk: ForeignKey, policy: LockPolicy) -> list[str]:
    """Drop one constraint in its own transaction (IF EXISTS: a rerun goes on)."""
    return [
        f"-- {fk.sql_table} ({', '.join(fk.sql_columns)}) ON DELETE {fk.on_delete_text}",
        *locked(
            [f"ALTER TABLE {fk.sql_table} DROP CONSTRAINT IF EXISTS {fk.sql_constraint};"],
            f"{fk.sql_table} ({fk.constraint})",
            policy,
        ),
    ]


def restore_statements(fks: tuple[ForeignKey, ...], policy: LockPolicy) -> list[str]:
    """Phase 1: every constraint back NOT VALID (unless it was not valid or not
    enforced to begin with; pg_get_constraintdef() then already says so). Phase 2:
    validate each, recording failures. Last: fail if any validation failed."""
    out = [f"SELECT pg_catalog.set_config('{_FAILURES}', '', false);", ""]
    out += ["-- Phase 1: every constraint back, NOT VALID (checks new writes at once)."]
    for fk in fks:
        validate = fk.validated and fk.enforced
        definition = fk.definition + (" NOT VALID" if validate else "")
        add = f"ALTER TABLE {fk.sql_table} ADD CONSTRAINT {fk.sql_constraint} {definition};"
        out += [f"-- {fk.sql_table} ({', '.join(fk.sql_columns)}) {fk.sql_constraint}"]
        out += locked(
            [f"IF NOT EXISTS ({_exists(fk)}) THEN", f"  {add}", "END IF;"],
            f"{fk.sql_table} ({fk.constraint})",
            policy,
        )
    out += ["", "-- Phase 2: validate each; a failure is recorded and the others go on."]
    for fk in fks:
        if not (fk.validated and fk.enforced):
            continue
        record = (
            f"PERFORM pg_catalog.set_config('{_FAILURES}',"
            f" pg_catalog.current_setting('{_FAILURES}') || pg_catalog.format('%s on %s: %s"
            f" row(s) violate it; ', {quote_literal(fk.constraint)},"
            f" {quote_literal(fk.sql_table)}, ({violation_count_sql(fk)})), false);"
        )
        out += [f"-- {fk.sql_table} {fk.sql_constraint}"]
        out += locked(
            [f"ALTER TABLE {fk.sql_table} VALIDATE CONSTRAINT {fk.sql_constraint};"],
            f"{fk.sql_table} ({fk.constraint})",
            policy,
            on_violation=[record],
        )
    out += [
        "",
        "-- Every constraint is present; fail (so the tool keeps this migration applied)",
        "-- if some are still NOT VALID, naming them and the rows that violate them.",
        "DO $fk$ BEGIN",
        f"  IF pg_catalog.current_setting('{_FAILURES}') <> '' THEN",
        (
            "    RAISE EXCEPTION 'auth-toolkit: every constraint is back, but not all are valid: %"
            " fix those rows (auth-toolkit fk-audit --check-restore counts them) and roll back"
            f" again', pg_catalog.current_setting('{_FAILURES}')"
        ),
        "      USING ERRCODE = 'foreign_key_violation';",
        "  END IF;",
        "END $fk$;",
    ]
    return out
