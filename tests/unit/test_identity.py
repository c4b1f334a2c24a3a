"""Staff identity with in-memory fakes: login, throttling, sessions, CSRF, disabling, resets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hub.domain.error import Conflict, InvalidInput, TooManyRequests, Unauthenticated
from hub.services.identity import (
    IdentityService,
    Role,
    SessionRecord,
    StaffCaller,
    StaffUser,
    csrf_matches,
    token_hash,
)
from hub.services.throttle import TokenBucketLimiter

PASSWORD = "correct-horse-battery"


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2025, 3, 3, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class PlainHasher:
    """Not a hash: keeps unit tests fast; the argon2 adapter is exercised by the integration tests."""

    def hash(self, password: str) -> str:
        return "plain$" + password

    def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == "plain$" + password

    def needs_rehash(self, password_hash: str) -> bool:
        return False


class Users:
    def __init__(self) -> None:
        self.rows: dict[str, StaffUser] = {}

    def add(self, user: StaffUser) -> None:
        if any(u.username == user.username for u in self.rows.values()):
            raise Conflict("exists")
        self.rows[user.user_id] = user

    def by_username(self, username: str) -> StaffUser | None:
        return next((u for u in self.rows.values() if u.username == username), None)

    def by_id(self, user_id: str) -> StaffUser | None:
        return self.rows.get(user_id)

    def list(self, org_id: str | None = None) -> list[StaffUser]:
        return list(self.rows.values())

    def set_password(self, user_id: str, password_hash: str, at: datetime) -> None:
        self.rows[user_id] = replace(self.rows[user_id], password_hash=password_hash)

    def set_disabled(self, user_id: str, disabled: bool, at: datetime) -> None:
        self.rows[user_id] = replace(self.rows[user_id], disabled=disabled)


class Sessions:
    def __init__(self) -> None:
        self.rows: dict[str, SessionRecord] = {}

    def create(self, record: SessionRecord) -> None:
        self.rows[record.token_hash] = record

    def get(self, token_hash: str) -> SessionRecord | None:
        return self.rows.get(token_hash)

    def touch(self, token_hash: str, at: datetime) -> None:
        self.rows[token_hash] = replace(self.rows[token_hash], last_seen_at=at)

    def delete(self, token_hash: str) -> None:
        self.rows.pop(token_hash, None)

    def delete_for_user(self, user_id: str) -> int:
        gone = [k for k, v in self.rows.items() if v.user_id == user_id]
        for k in gone:
            del self.rows[k]
        return len(gone)


class Attempts:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, datetime, bool]] = []

    def record(self, username: str, source: str, at: datetime, success: bool) -> None:
        self.rows.append((username, source, at, success))

    def failures_since(self, username: str, source: str, since: datetime) -> list[datetime]:
        return sorted(
            a for u, s, a, ok in self.rows if (u, s) == (username, source) and not ok and a >= since
        )

    def clear(self, username: str, source: str) -> None:
        self.rows = [r for r in self.rows if (r[0], r[1]) != (username, source) or r[3]]


@pytest.fixture
def world() -> tuple[IdentityService, Clock, Sessions]:
    clock, sessions = Clock(), Sessions()
    service = IdentityService(Users(), sessions, Attempts(), PlainHasher(), clock)
    service.add_user("mhc.clinician", "camhs-songjiang-mhc", "clinician", password=PASSWORD)
    return service, clock, sessions


def test_login_opens_a_session_whose_token_is_stored_hashed(
    world: tuple[IdentityService, Clock, Sessions],
) -> None:
    service, _, sessions = world
    session = service.login("MHC.Clinician", PASSWORD, "10.0.0.1")
    assert session.token not in sessions.rows
    assert token_hash(session.token) in sessions.rows
    caller = service.resolve(session.token)
    assert isinstance(caller, StaffCaller)
    assert (caller.org_id, caller.role, caller.label) == ("camhs-songjiang-mhc", "clinician", "mhc.clinician")
    assert csrf_matches(caller.csrf_token, session.csrf_token)
    assert not csrf_matches(caller.csrf_token, "forged")
    assert not csrf_matches(caller.csrf_token, None)


def test_wrong_password_and_unknown_user_look_the_same(
    world: tuple[IdentityService, Clock, Sessions],
) -> None:
    service, _, _ = world
    with pytest.raises(Unauthenticated) as wrong:
        service.login("mhc.clinician", "nope", "10.0.0.1")
    with pytest.raises(Unauthenticated) as unknown:
        service.login("nobody", "nope", "10.0.0.1")
    assert wrong.value.message == unknown.value.message


def test_five_failures_in_fifteen_minutes_throttle_that_user_from_that_address(
    world: tuple[IdentityService, Clock, Sessions],
) -> None:
    service, clock, _ = world
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            service.login("mhc.clinician", "wrong", "10.0.0.1")
        clock.at += timedelta(minutes=1)
    with pytest.raises(TooManyRequests) as throttled:
        service.login("mhc.clinician", PASSWORD, "10.0.0.1")
    assert 0 < throttled.value.retry_after <= 15 * 60
    assert service.login("mhc.clinician", PASSWORD, "10.0.0.2")  # another address is not blocked
    clock.at += timedelta(minutes=11)  # the first failure left the window
    assert service.login("mhc.clinician", PASSWORD, "10.0.0.1")


def test_sessions_expire_when_idle_and_end_on_disable_or_reset(
    world: tuple[IdentityService, Clock, Sessions],
) -> None:
    service, clock, _ = world
    token = service.login("mhc.clinician", PASSWORD, "a").token
    clock.at += timedelta(minutes=29)
    assert service.resolve(token) is not None
    clock.at += timedelta(minutes=31)
    assert service.resolve(token) is None
    token = service.login("mhc.clinician", PASSWORD, "a").token
    service.disable("mhc.clinician")
    assert service.resolve(token) is None
    with pytest.raises(Unauthenticated):
        service.login("mhc.clinician", PASSWORD, "a")
    service.enable("mhc.clinician")
    token = service.login("mhc.clinician", PASSWORD, "a").token
    _, new_password = service.reset_password("mhc.clinician")
    assert service.resolve(token) is None
    assert service.login("mhc.clinician", new_password, "a")


def test_user_records_are_checked(world: tuple[IdentityService, Clock, Sessions]) -> None:
    service, _, _ = world
    with pytest.raises(Conflict):
        service.add_user("mhc.clinician", "camhs-songjiang-mhc", "clinician")
    with pytest.raises(InvalidInput):
        service.add_user("x", "camhs-songjiang-mhc", "clinician")
    with pytest.raises(InvalidInput):
        service.add_user("someone.else", "camhs-songjiang-mhc", "system")  # not a staff role
    with pytest.raises(InvalidInput):
        service.add_user("someone.else", "camhs-songjiang-mhc", "clinician", password="short")
    user, generated = service.add_user("new.user", "police-songjiang", Role.CASE_WORKER.value)
    assert len(generated) >= 12
    assert user.role is Role.CASE_WORKER


def test_token_bucket_allows_a_burst_then_refills_per_key() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(rate=1.0, burst=2, monotonic=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(TooManyRequests) as limited:
        limiter.take("a")
    assert limited.value.retry_after == 1
    limiter.take("b")
    now[0] += 1.0
    limiter.take("a")
