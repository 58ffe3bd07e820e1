"""A malformed --database-url is a usage error in plain words for every toolkit
command (issue #29: `fk-audit --database-url postgresql://postgres@127.0.0.1:notaport/x`
printed Python's `invalid literal for int() with base 10: 'notaport'`), and the
message never echoes the URL, which may hold a password."""

from __future__ import annotations

import subprocess

import pytest

from auth_client.toolkit.cli import main
from auth_client.toolkit.urls import DatabaseUrlError, check_database_url
from tests.toolkit.support import TOOLKIT

COMMANDS = {
    "fk-audit": [],
    "reconcile": ["--table", "t", "--column", "c", "--target", "127.0.0.1:1"],
    "rehearse": ["--target", "127.0.0.1:1"],
}
BAD = {
    "postgresql://postgres:s3cret@127.0.0.1:notaport/x": "the port 'notaport' after the host"
    " '127.0.0.1' is not a number from 1 to 65535",
    "postgresql://u:s3cret@db.internal:99999/x": "the port '99999' after the host"
    " 'db.internal' is not a number from 1 to 65535",
    "postgresql://u:s3cret@h1:5432,h2:x/db": "the port 'x' after the host 'h2'",
    "postgresql://u:s3cret@h/db?port=abc": "the port 'abc' in ?port=",
    "postgresql://u:s3cret@[::1/db": "an IPv6 address in the URL must be written in [ ]",
    "db.internal:5432/x": "a database URL starts with postgresql://",
    "mysql://u:s3cret@h/x": "a database URL starts with postgresql://",
    " ": "the database URL is empty",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("url", sorted(BAD))
def test_a_bad_url_is_a_usage_error_in_plain_words(
    command: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--database-url", url, *COMMANDS[command]])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"auth-toolkit {command}: error: argument --database-url: {BAD[url]}" in err
    assert "s3cret" not in err
    assert "invalid literal" not in err


def test_the_command_from_the_first_hour_report() -> None:
    done = subprocess.run(
        [TOOLKIT, "fk-audit", "--database-url", "postgresql://postgres@127.0.0.1:notaport/x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "auth-toolkit fk-audit: error: argument --database-url: the port 'notaport' after the"
        " host '127.0.0.1' is not a number from 1 to 65535 (a database URL looks like"
        " postgresql://user:password@host:5432/dbname)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h:5432/db",
        "postgres://h/db",
        "postgresql://[::1]:5432/db",
        "postgresql://u@h1:5432,h2:5433/db?sslmode=require",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u:p%40ss@h/db?port=5433",
    ],
)
def test_urls_asyncpg_takes_are_accepted(url: str) -> None:
    assert check_database_url(url) == url


def test_the_error_is_an_argparse_type_error() -> None:
    with pytest.raises(DatabaseUrlError):
        check_database_url("postgresql://h:0/db")
