"""Staff identity: users, roles, login with throttling, server-side sessions and CSRF tokens.

Who a person is comes from an ``IdentityProvider`` (local passwords by default; an OIDC provider can
replace it); what they may do comes from the hub's own user record (organisation and role), so an
external provider never widens access.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from hub.domain.error import Conflict, Forbidden, InvalidInput, NotFound, TooManyRequests, Unauthenticated
from hub.services.port import Caller, Clock


class Role(StrEnum):
    CLINICIAN = "clinician"  # recipient staff at a clinic
    CASE_WORKER = "case-worker"  # recipient staff elsewhere (police, centres, civil affairs, schools)
    REFERRER = "referrer"  # staff who send referrals and follow them
    SUPERVISOR = "supervisor"  # an agency's escalations and its own turnaround
    DISTRICT_MONITOR = "district-monitor"  # district office: aggregates only
    AUDITOR = "auditor"  # the audit trail, never clinical content
    ADMIN = "admin"  # user administration
    SYSTEM = "system"  # an agency system (connector) with an API key


STAFF_ROLES = tuple(r for r in Role if r is not Role.SYSTEM)
RECIPIENT_ROLES = frozenset({Role.CLINICIAN, Role.CASE_WORKER, Role.SUPERVISOR, Role.SYSTEM})
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
MIN_PASSWORD = 12


def parse_role(value: str) -> Role:
    role = Role(value) if value in Role._value2member_map_ else None
    if role is None or role is Role.SYSTEM:
        raise InvalidInput(
            f"unknown staff role '{value}'",
            details=[{"path": "$.role", "rule": "code-unknown", "message": ", ".join(STAFF_ROLES)}],
            code="role-unknown",
        )
    return role


@dataclass(frozen=True)
class StaffUser:
    user_id: str
    username: str
    org_id: str
    role: Role
    display_name: str
    disabled: bool
    created_at: datetime
    password_hash: str = ""  # never leaves the identity service
    external_subject: str | None = None  # the OIDC "sub" once linked


@dataclass(frozen=True)
class StaffCaller(Caller):
    """A signed-in staff user: ``label`` is the username, ``user_id`` the stable id used in audit."""

    user_id: str = ""
    csrf_token: str = ""


@dataclass(frozen=True)
class SessionRecord:
    token_hash: str
    user_id: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Identity:
    """What an identity provider vouches for: a subject, and the username it maps to in the hub."""

    provider: str
    subject: str
    username: str


@dataclass(frozen=True)
class NewSession:
    token: str  # goes to the browser once (cookie); only its hash is stored
    csrf_token: str
    user: StaffUser
    expires_at: datetime


# ------------------------------------------------------------------------------------------ ports


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class UserRepository(Protocol):
    def add(self, user: StaffUser) -> None:
        """Insert; raise Conflict when the username exists."""

    def by_username(self, username: str) -> StaffUser | None: ...

    def by_id(self, user_id: str) -> StaffUser | None: ...

    def list(self, org_id: str | None = None) -> list[StaffUser]: ...

    def set_password(self, user_id: str, password_hash: str, at: datetime) -> None: ...

    def set_disabled(self, user_id: str, disabled: bool, at: datetime) -> None: ...


class SessionStore(Protocol):
    def create(self, record: SessionRecord) -> None: ...

    def get(self, token_hash: str) -> SessionRecord | None: ...

    def touch(self, token_hash: str, at: datetime) -> None: ...

    def delete(self, token_hash: str) -> None: ...

    def delete_for_user(self, user_id: str) -> int: ...


class LoginAttempts(Protocol):
    def record(self, username: str, source: str, at: datetime, success: bool) -> None: ...

    def failures_since(self, username: str, source: str, since: datetime) -> list[datetime]:
        """Failure times for (username, source) since ``since``, oldest first."""

    def clear(self, username: str, source: str) -> None: ...


class IdentityProvider(Protocol):
    """Vouches for who is logging in. ``LocalPasswordProvider`` is the default; an OIDC provider
    would implement ``login_url`` (redirect to the issuer) and ``complete`` (code exchange) instead."""

    name: str

    def authenticate(self, username: str, password: str) -> Identity | None: ...

    def login_url(self, state: str) -> str | None:
        """Where to send the browser to log in; None for providers that take a password form."""


# ------------------------------------------------------------------------------------------ helpers


def token_hash(token: str) -> str:
    # Session tokens are 256-bit random: a plain SHA-256 suffices and keeps lookups indexable.
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given or "")


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInput(
            f"username '{username}' must be 3–64 lower-case letters, digits, '.', '_' or '-'",
            code="username-invalid",
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD} characters", code="password-too-short")
    return password


# ------------------------------------------------------------------------------------------ providers


class LocalPasswordProvider:
    """Passwords hashed with argon2 in the hub's own user table."""

    name = "local"

    def __init__(self, users: UserRepository, hasher: PasswordHasher) -> None:
        self._users = users
        self._hasher = hasher
        # Verifying against a dummy hash for unknown users keeps the answer time the same,
        # so usernames cannot be probed by timing.
        self._dummy = hasher.hash(secrets.token_urlsafe(16))

    def authenticate(self, username: str, password: str) -> Identity | None:
        user = self._users.by_username(username)
        if user is None or not user.password_hash:
            self._hasher.verify(self._dummy, password)
            return None
        if not self._hasher.verify(user.password_hash, password):
            return None
        return Identity(provider=self.name, subject=user.user_id, username=user.username)

    def login_url(self, state: str) -> str | None:
        return None


# ------------------------------------------------------------------------------------------ use cases


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    max_failures: int = 5
    failure_window: timedelta = timedelta(minutes=15)


class IdentityService:
    """Login, logout, session resolution and user administration."""

    def __init__(
        self,
        users: UserRepository,
        sessions: SessionStore,
        attempts: LoginAttempts,
        hasher: PasswordHasher,
        clock: Clock,
        provider: IdentityProvider | None = None,
        policy: SessionPolicy | None = None,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._attempts = attempts
        self._hasher = hasher
        self._clock = clock
        self.provider: IdentityProvider = provider or LocalPasswordProvider(users, hasher)
        self.policy = policy or SessionPolicy()

    # -- login / logout ----------------------------------------------------------------------------

    def login(self, username: str, password: str, source: str) -> NewSession:
        """Check throttling, then the provider, then the hub's user record; open a session."""
        now = self._clock.now()
        name = username.strip().lower()
        failures = self._attempts.failures_since(name, source, now - self.policy.failure_window)
        if len(failures) >= self.policy.max_failures:
            retry = (failures[-self.policy.max_failures] + self.policy.failure_window) - now
            raise TooManyRequests(
                f"too many failed logins for this user from this address; try again in "
                f"{max(1, int(retry.total_seconds()) // 60 + 1)} minute(s)",
                retry_after=int(retry.total_seconds()) + 1,
                code="login-throttled",
            )
        identity = self.provider.authenticate(name, password)
        user = self._users.by_username(identity.username) if identity else None
        if identity is None or user is None or user.disabled:
            self._attempts.record(name, source, now, success=False)
            raise Unauthenticated("the username or password is wrong, or the account is disabled")
        self._attempts.clear(name, source)
        self._attempts.record(name, source, now, success=True)
        if identity.provider == "local" and self._hasher.needs_rehash(user.password_hash):
            # Cost parameters were raised since this password was set: upgrade it while we have it.
            self._users.set_password(user.user_id, self._hasher.hash(password), now)
        return self.open_session(user)

    def open_session(self, user: StaffUser) -> NewSession:
        now = self._clock.now()
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires = now + self.policy.absolute
        self._sessions.create(
            SessionRecord(
                token_hash=token_hash(token),
                user_id=user.user_id,
                csrf_token=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )
        return NewSession(token=token, csrf_token=csrf, user=user, expires_at=expires)

    def logout(self, token: str) -> None:
        self._sessions.delete(token_hash(token))

    def resolve(self, token: str) -> StaffCaller | None:
        """The caller behind a session cookie, or None (expired, idle too long, user disabled)."""
        if not token:
            return None
        digest = token_hash(token)
        record = self._sessions.get(digest)
        if record is None:
            return None
        now = self._clock.now()
        if now >= record.expires_at or now - record.last_seen_at > self.policy.idle:
            self._sessions.delete(digest)
            return None
        user = self._users.by_id(record.user_id)
        if user is None or user.disabled:
            self._sessions.delete(digest)
            return None
        # Writing on every request would serialise page loads on one row; a minute's slack is enough.
        if now - record.last_seen_at > timedelta(minutes=1):
            self._sessions.touch(digest, now)
        return StaffCaller(
            org_id=user.org_id,
            role=user.role.value,
            label=user.username,
            user_id=user.user_id,
            csrf_token=record.csrf_token,
        )

    # -- administration ----------------------------------------------------------------------------

    def add_user(
        self, username: str, org_id: str, role: str, display_name: str = "", password: str | None = None
    ) -> tuple[StaffUser, str]:
        """Create a user; returns it with the initial password (generated when none is given)."""
        name = check_username(username)
        if not org_id.strip():
            raise InvalidInput("a user belongs to exactly one organisation", code="org-required")
        if self._users.by_username(name) is not None:
            raise Conflict(f"user '{name}' exists already", code="user-exists")
        secret = check_password(password) if password else generate_password()
        user = StaffUser(
            user_id="u-" + uuid.uuid4().hex[:16],
            username=name,
            org_id=org_id.strip(),
            role=parse_role(role),
            display_name=display_name.strip() or name,
            disabled=False,
            created_at=self._clock.now(),
            password_hash=self._hasher.hash(secret),
        )
        self._users.add(user)
        return user, secret

    def disable(self, username: str) -> StaffUser:
        user = self._require(username)
        self._users.set_disabled(user.user_id, True, self._clock.now())
        self._sessions.delete_for_user(user.user_id)
        return replace(user, disabled=True)

    def enable(self, username: str) -> StaffUser:
        user = self._require(username)
        self._users.set_disabled(user.user_id, False, self._clock.now())
        return replace(user, disabled=False)

    def reset_password(self, username: str, password: str | None = None) -> tuple[StaffUser, str]:
        user = self._require(username)
        secret = check_password(password) if password else generate_password()
        self._users.set_password(user.user_id, self._hasher.hash(secret), self._clock.now())
        # A reset ends every open session of that user.
        self._sessions.delete_for_user(user.user_id)
        return user, secret

    def users(self, caller: Caller) -> list[StaffUser]:
        if caller.role != Role.ADMIN:
            raise Forbidden("only an admin lists users", code="role-forbidden")
        return self._users.list()

    def all_users(self) -> list[StaffUser]:
        """For the operator's CLI (a shell on the hub host is already full trust)."""
        return self._users.list()

    def get(self, username: str) -> StaffUser | None:
        return self._users.by_username(username.strip().lower())

    def _require(self, username: str) -> StaffUser:
        user = self._users.by_username(username.strip().lower())
        if user is None:
            raise NotFound(f"no user '{username}'", code="user-not-found")
        return user


def public_user(user: StaffUser) -> dict[str, object]:
    """A user as the API shows it: never the password hash."""
    return {
        "user_id": user.user_id,
        "username": user.username,
        "org_id": user.org_id,
        "role": user.role.value,
        "display_name": user.display_name,
        "disabled": user.disabled,
        "created_at": user.created_at,
    }


def roles_named(values: Iterable[str]) -> frozenset[Role]:
    return frozenset(Role(v) for v in values)
