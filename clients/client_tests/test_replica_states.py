"""The replica's storage (17 bytes a user) and its gap rule, without I/O."""

from __future__ import annotations

import os
import random
import uuid

import pytest

from auth_client._replica import Positions
from auth_client._replica_states import MERGE_MIN, ReplicaStates
from auth_client.contract import UserState

ACTIVE, DELETED = UserState.ACTIVE, UserState.DELETED


def _loaded(ids: list[uuid.UUID], deleted: set[uuid.UUID], page: int = 1000) -> ReplicaStates:
    states = ReplicaStates()
    ordered = sorted(ids, key=lambda u: u.bytes)
    for start in range(0, len(ordered), page):
        chunk = ordered[start : start + page]
        states.extend(
            b"".join(u.bytes for u in chunk), bytes(1 if u in deleted else 0 for u in chunk)
        )
    return states


def test_a_snapshot_answers_active_deleted_and_nothing_for_an_unknown_id() -> None:
    ids = [uuid.uuid4() for _ in range(5000)]
    deleted = set(ids[:700])
    states = _loaded(ids, deleted, page=333)
    assert len(states) == 5000
    assert states.deleted_count == 700
    for user_id in ids:
        assert states.get(user_id) is (DELETED if user_id in deleted else ACTIVE)
    assert states.get(uuid.uuid4()) is None
    assert states.get(uuid.UUID(int=0)) is None


def test_ids_that_share_their_upper_half_are_told_apart() -> None:
    high = random.getrandbits(64) << 64
    ids = [uuid.UUID(int=high | low) for low in (5, 9, 1, 7)]
    states = _loaded(ids, {ids[1]})
    assert [states.get(u) for u in ids] == [ACTIVE, DELETED, ACTIVE, ACTIVE]
    assert states.get(uuid.UUID(int=high | 6)) is None
    states.created(uuid.UUID(int=high | 6))
    states.merge()
    assert states.get(uuid.UUID(int=high | 6)) is ACTIVE
    assert [states.get(u) for u in ids] == [ACTIVE, DELETED, ACTIVE, ACTIVE]


def test_events_only_move_states_forward_and_merging_keeps_every_answer() -> None:
    rng = random.Random(7)
    ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(20_000)]
    states = _loaded(ids, set(ids[:100]))
    expected = {u: (DELETED if i < 100 else ACTIVE) for i, u in enumerate(ids)}
    for _ in range(3 * MERGE_MIN):  # several merges on the way
        new = uuid.UUID(int=rng.getrandbits(128))
        states.created(new)
        expected.setdefault(new, ACTIVE)
        if rng.random() < 0.3:
            gone = rng.choice(list(expected))
            states.deleted(gone)
            expected[gone] = DELETED
        if rng.random() < 0.1:
            again = rng.choice(list(expected))
            states.created(again)  # late or repeated: changes nothing
    assert states.merges >= 2
    assert len(states) == len(expected)
    assert all(states.get(u) is state for u, state in expected.items())
    assert states.deleted_count == sum(s is DELETED for s in expected.values())
    # A deletion of an id never seen (its creation's event not here yet) is final too.
    late = uuid.uuid4()
    states.deleted(late)
    states.created(late)
    assert states.get(late) is DELETED


def test_pages_must_come_in_ascending_order_with_one_flag_per_id() -> None:
    a, b = sorted((uuid.uuid4(), uuid.uuid4()), key=lambda u: u.bytes)
    states = ReplicaStates()
    states.extend(b.bytes, b"\x00")
    with pytest.raises(ValueError, match="ascending"):
        states.extend(a.bytes, b"\x00")
    with pytest.raises(ValueError, match="one deleted flag"):
        states.extend(a.bytes, b"")


def test_a_million_users_take_at_most_20_bytes_each() -> None:
    count, page = 1_000_000, 10_000
    raw = sorted(os.urandom(16) for _ in range(count))
    states = ReplicaStates()
    for start in range(0, count, page):
        states.extend(b"".join(raw[start : start + page]), bytes(page))
    del raw
    assert len(states) == count
    assert states.nbytes() / count <= 20
    probe = uuid.uuid4()
    assert states.get(probe) is None


def test_a_position_missing_while_later_ones_arrive_is_a_gap() -> None:
    positions = Positions(10)
    positions.saw(9, 0.0)  # in the snapshot
    positions.saw(11, 0.0)
    assert (positions.applied, positions.missing_for(5.0)) == (11, 0.0)
    positions.saw(13, 1.0)  # 12 missing from t=1
    positions.saw(14, 2.0)
    assert positions.applied == 11
    assert positions.missing_for(3.5) == 2.5
    positions.saw(12, 4.0)  # arrives late: everything up to 14
    assert (positions.applied, positions.missing_for(9.0)) == (14, 0.0)
    positions.saw(16, 10.0)
    positions.saw(18, 11.0)
    positions.saw(15, 12.0)  # 17 is missing now, counted from when 16 was applied
    assert positions.applied == 16
    assert positions.missing_for(13.0) == 1.0
