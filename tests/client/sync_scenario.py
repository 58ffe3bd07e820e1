"""SyncAuthClient as a pre-fork, threaded service uses it, in a process of its own
(run with any interpreter that has auth_client installed: the repository's, or a
client-only virtualenv's):

    python sync_scenario.py TARGET ACTIVE_IDS DELETED_IDS [TOKEN]   (ids comma-separated)

1. 32 threads share one client: each checks every active, deleted and unknown id
   (user_exists, users_exist, require_user, get_user); every answer must be right,
   and no thread may see an error.
2. The process forks after using the client. In the child the inherited client
   fails at once with a RuntimeError naming the fork; a new client works, and so does
   one the parent made but never used; closing them leaves no thread behind.
3. The parent's client still works after the fork; closing it leaves no thread.

Prints one JSON line of figures; exits non-zero with the reason on any failure.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

from auth_client import SyncAuthClient, UserNotFoundError

THREADS = 32


def _check(auth: SyncAuthClient, active: list[str], deleted: list[str]) -> None:
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    for user_id in active:
        assert auth.user_exists(user_id) is True, user_id
        auth.require_user(user_id)
    for user_id in deleted + unknown:
        assert auth.user_exists(user_id) is False, user_id
        try:
            auth.require_user(user_id)
        except UserNotFoundError as exc:
            assert exc.user_ids == (uuid.UUID(user_id),)
        else:
            raise AssertionError(f"require_user({user_id}) did not raise")
    answers = auth.users_exist(active + deleted + unknown)
    assert answers == {
        **{uuid.UUID(u): True for u in active},
        **{uuid.UUID(u): False for u in deleted + unknown},
    }
    profile = auth.get_user(active[0])
    assert profile is not None
    assert str(profile.id) == active[0]
    assert auth.get_user(deleted[0]) is None


def _threads_share_one_client(auth: SyncAuthClient, active: list[str], deleted: list[str]) -> int:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                _check(auth, active, deleted)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise AssertionError(f"{len(errors)} thread(s) failed, first: {errors[0]!r}")
    return THREADS * 3


def _threads_other_than(before: set[threading.Thread], grace_s: float = 5.0) -> list[str]:
    """Threads started since `before` still alive after `grace_s`: the client's own
    are joined by close(); gRPC's channel threads end a moment after the channel
    closes (a loaded machine once saw one still there right after close)."""
    deadline = time.monotonic() + grace_s
    while True:
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _child(
    inherited: SyncAuthClient,
    unused: SyncAuthClient,
    target: str,
    token: str | None,
    active: list[str],
    deleted: list[str],
) -> None:
    before = set(threading.enumerate())
    started = time.monotonic()
    try:
        inherited.user_exists(active[0])
    except RuntimeError as exc:
        assert "fork" in str(exc), str(exc)
        assert "new SyncAuthClient" in str(exc), str(exc)
    else:
        raise AssertionError("the inherited client answered in the child")
    assert time.monotonic() - started < 1.0
    with SyncAuthClient(target, token=token, timeout=5) as own:
        _check(own, active, deleted)
    with unused:  # made in the parent, first used here
        _check(unused, active, deleted)
    inherited.close()  # closes nothing of the parent's, and does not hang
    left = _threads_other_than(before)
    assert not left, f"threads left in the child: {left}"


def _fork_and_check(
    auth: SyncAuthClient, target: str, token: str | None, active: list[str], deleted: list[str]
) -> None:
    unused = SyncAuthClient(target, token=token, timeout=5)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _child(auth, unused, target, token, active, deleted)
        except BaseException as exc:
            print(f"child: {exc!r}", file=sys.stderr)
            code = 1
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            raise AssertionError("the child hung")
        time.sleep(0.02)
    assert os.WIFEXITED(status), f"child status {status}"
    assert os.WEXITSTATUS(status) == 0, f"child status {status}"
    unused.close()


def main() -> None:
    target, active_text, deleted_text = sys.argv[1:4]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    active, deleted = active_text.split(","), deleted_text.split(",")
    before = set(threading.enumerate())
    auth = SyncAuthClient(target, token=token, timeout=5)
    with auth:
        checks = _threads_share_one_client(auth, active, deleted)
        _fork_and_check(auth, target, token, active, deleted)
        _check(auth, active, deleted)  # the parent's client is unaffected
        stats = auth.stats()
    left = _threads_other_than(before)
    assert not left, f"threads left after close: {left}"
    print(
        json.dumps(
            {
                "checks": checks,
                "rpcs": stats.rpcs,
                "coalesced": stats.coalesced,
                "cache_hits": stats.cache_hits,
            }
        )
    )


if __name__ == "__main__":
    main()
