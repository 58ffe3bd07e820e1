"""protos/ is the public contract: generated code is fresh and buf lint is clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auth_client.contract import admin_pb2, auth_pb2, events_pb2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_buf_lint_is_clean() -> None:
    buf = BIN / "buf"
    if not buf.exists():
        pytest.skip("buf-bin not installed")
    result = subprocess.run(
        [str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fixed_interface_names() -> None:
    services = {
        name: [m.name for m in svc.methods]
        for module in (auth_pb2, admin_pb2)
        for name, svc in module.DESCRIPTOR.services_by_name.items()
    }
    assert services == {
        "AuthService": ["UserExists", "GetUser", "BatchUserExists"],
        "UserAdminService": ["CreateUser", "DeleteUser"],
    }
    assert auth_pb2.DESCRIPTOR.package == "auth.v1"
    assert dict(auth_pb2.UserState.items()) == {
        "USER_STATE_UNSPECIFIED": 0,
        "USER_STATE_ACTIVE": 1,
        "USER_STATE_DELETED": 2,
        "USER_STATE_NOT_FOUND": 3,
    }
    fields = {
        "UserExistsRequest": {"user_id": 1},
        "UserExistsResponse": {"exists": 1, "state": 2},
        "GetUserRequest": {"user_id": 1},
        "GetUserResponse": {"user": 1},
        "BatchUserExistsRequest": {"user_ids": 1, "states_only": 2},
        "BatchUserExistsResponse": {"results": 1, "states": 2},
        "UserExistsResult": {"user_id": 1, "exists": 2, "state": 3},
    }
    for message, expected in fields.items():
        desc = auth_pb2.DESCRIPTOR.message_types_by_name[message]
        assert {f.name: f.number for f in desc.fields} == expected
    user = {f.name for f in auth_pb2.User.DESCRIPTOR.fields}
    assert {"id", "username", "display_name", "created_at"} <= user
    assert "email" not in user
    event = {f.name for f in events_pb2.UserDeleted.DESCRIPTOR.fields}
    assert {"event_id", "user_id", "deleted_at", "occurred_at"} <= event


def test_no_breaking_change_since_the_last_release() -> None:
    """protos/releases/ holds the contract of each release as a buf image; the
    current protos stay wire- and source-compatible with the last one."""
    buf = BIN / "buf"
    if not buf.exists():
        pytest.skip("buf-bin not installed")
    releases = sorted((ROOT / "protos" / "releases").glob("v*.binpb"))
    assert releases
    result = subprocess.run(
        [str(buf), "breaking", "--against", str(releases[-1])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_state_and_the_id_format_are_defined_once_in_the_contract() -> None:
    """Client and server share one UserState whose numbers are the proto enum's, and
    one id pattern (the server refuses what the client refuses)."""
    import auth_client  # noqa: PLC0415
    from auth_client.contract import USER_ID_TEXT, UserState  # noqa: PLC0415
    from auth_service.api import validation  # noqa: PLC0415

    assert auth_client.UserState is UserState
    assert {s.name: int(s) for s in UserState} == {
        name.removeprefix("USER_STATE_"): number
        for name, number in auth_pb2.UserState.items()
        if number != 0
    }
    assert validation.USER_ID_TEXT is USER_ID_TEXT
