"""WorkOS event models: a common envelope, typed data for the common types.

Parsing is deliberately forgiving: unknown fields are kept, unknown event types keep their raw
``data`` dict, and only the fields the sync needs are required. WorkOS adds fields often, and a
parse failure answered with 4xx would turn a harmless addition into lost events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Column

from .._exceptions import InvalidEventError
from .tables import (
    WorkOSEventRecord,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSTombstone,
    WorkOSUser,
    WorkOSUserTombstone,
)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UTCTimestamp = Annotated[datetime, AfterValidator(as_utc)]
"""A datetime normalised to aware UTC (WorkOS sends ``...Z``, ``+00:00`` and zone-less forms)."""


class WorkOSModel(BaseModel):
    """Base of every wire model: unknown fields are tolerated and kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class User(WorkOSModel):
    """A WorkOS user, as in ``user.created`` / ``user.updated`` data and the REST API."""

    object: str = "user"
    id: str
    email: str
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    profile_picture_url: str | None = None
    external_id: str | None = None
    # WorkOS documents string to string; Any keeps a surprise value from failing the delivery.
    metadata: dict[str, Any] = Field(default_factory=dict)
    last_sign_in_at: UTCTimestamp | None = None
    locale: str | None = None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp


class DeletedUser(WorkOSModel):
    """``user.deleted`` data: only ``id`` is guaranteed; the rest is there when WorkOS sends it."""

    object: str = "user"
    id: str
    email: str | None = None
    updated_at: UTCTimestamp | None = None


class Impersonator(WorkOSModel):
    """Who is impersonating the session's user, if anyone."""

    email: str | None = None
    reason: str | None = None


class AuthSession(WorkOSModel):
    """``session.*`` data (a sign-in session, not a database session)."""

    object: str = "session"
    id: str
    user_id: str | None = None
    organization_id: str | None = None
    auth_method: str | None = None
    status: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    impersonator: Impersonator | None = None
    expires_at: UTCTimestamp | None = None
    ended_at: UTCTimestamp | None = None
    created_at: UTCTimestamp | None = None
    updated_at: UTCTimestamp | None = None


class OrganizationDomain(WorkOSModel):
    """One domain of an organization."""

    id: str | None = None
    domain: str


class Organization(WorkOSModel):
    """``organization.*`` data."""

    object: str = "organization"
    id: str
    name: str | None = None
    domains: list[OrganizationDomain] = Field(default_factory=list)
    external_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: UTCTimestamp | None = None
    updated_at: UTCTimestamp | None = None


class RoleRef(WorkOSModel):
    """A role, referenced by slug."""

    slug: str


class OrganizationMembership(WorkOSModel):
    """``organization_membership.*`` data."""

    object: str = "organization_membership"
    id: str
    user_id: str | None = None
    organization_id: str | None = None
    status: str | None = None
    role: RoleRef | None = None
    roles: list[RoleRef] | None = None
    directory_managed: bool | None = None
    custom_attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: UTCTimestamp | None = None
    updated_at: UTCTimestamp | None = None


DataT = TypeVar("DataT")


class Event(WorkOSModel, Generic[DataT]):
    """The envelope every WorkOS event shares: ``id``, ``event`` (the type), ``data``, times.

    ``data`` is a typed model for user, session, organization and organization membership events,
    and the raw dict for any other type. Use ``Event[User]`` and friends to annotate handlers.
    """

    id: str
    event: str
    data: DataT
    created_at: UTCTimestamp
    context: dict[str, Any] | None = None
    object: str = "event"


SYNCED_EVENT_TYPES = frozenset({"user.created", "user.updated", "user.deleted"})
"""The event types that change the user table (and that `sync_events` always pulls)."""

MIRRORED_EVENT_TYPES = SYNCED_EVENT_TYPES | frozenset(
    {
        "organization.created",
        "organization.updated",
        "organization.deleted",
        "organization_membership.created",
        "organization_membership.updated",
        "organization_membership.deleted",
        "session.created",
        "session.revoked",
    }
)
"""The event types that change a mirrored table; their data must be valid to be processed.

A payload of one of these types that is not valid is refused (`InvalidEventError`, a 400 on the
webhook route), whether or not its kind is mirrored by this app: WorkOS would never send it.
"""

# What a snapshot needs besides ``id`` to be mirrored (the models keep these optional so that
# Action contexts and deletions, which may omit them, still parse). Deletions need only ``id``.
_SYNC_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    User: (),
    Organization: ("updated_at",),
    OrganizationMembership: ("user_id", "organization_id", "updated_at"),
    AuthSession: ("user_id",),
}


def require_sync_fields(data: BaseModel) -> None:
    """Raise `InvalidEventError` unless ``data`` has every field its table needs.

    Organizations and memberships need ``updated_at`` (newest wins), memberships their
    ``user_id`` and ``organization_id``, sessions their ``user_id``. Called on the data of a
    created, updated or revoked event, and on every snapshot `mirror.apply_snapshots` gets.
    """
    missing = [
        name for name in _SYNC_FIELDS.get(type(data), ()) if getattr(data, name, None) is None
    ]
    if missing:
        raise InvalidEventError(
            "Invalid event: " + "; ".join(f"data.{name}: Field required" for name in missing)
        )


def data_model_for(event_type: str) -> type[BaseModel] | None:
    """Return the typed data model for ``event_type``, or ``None`` to keep the raw dict."""
    if event_type == "user.deleted":
        return DeletedUser
    prefix = event_type.partition(".")[0]
    return _DATA_MODELS.get(prefix)


_DATA_MODELS: dict[str, type[BaseModel]] = {
    "user": User,
    "session": AuthSession,
    "organization": Organization,
    "organization_membership": OrganizationMembership,
}

# Parametrised once, not per event: pydantic builds a validator for each parametrisation.
_TYPED_EVENTS: dict[type[BaseModel] | None, type[Event[Any]]] = {None: Event[dict[str, Any]]}
_models: list[type[BaseModel]] = [*_DATA_MODELS.values(), DeletedUser]
for _model in _models:
    _TYPED_EVENTS[_model] = Event[_model]  # type: ignore[valid-type]


def subject_of(event: Event[Any]) -> str | None:
    """The id an event is about, for the ledger: the user for user events, else the data's id."""
    data = event.data
    value = data.get("id") if isinstance(data, dict) else getattr(data, "id", None)
    return value if isinstance(value, str) else None


def _length(column: Column[Any]) -> int:
    length = getattr(column.type, "length", None)
    assert isinstance(length, int), f"{column} has no length"
    return length


def _columns(table: Any) -> Any:
    return table.__table__.c


# The bounded columns an event's values are written to, read from the tables themselves so the
# checks cannot drift from the schema. PostgreSQL refuses a longer value (SQLite would keep it),
# and a column cannot be widened without a migration on every existing deployment.
_LEDGER, _USERS, _TOMBSTONES = (
    _columns(t) for t in (WorkOSEventRecord, WorkOSUser, WorkOSUserTombstone)
)
MAX_EVENT_ID_LENGTH = min(_length(_LEDGER.id), _length(_TOMBSTONES.event_id))
"""The longest event id stored (ledger and tombstone columns); longer ids are refused."""
MAX_EVENT_TYPE_LENGTH = _length(_LEDGER.event_type)
"""The longest event type stored."""
MAX_SUBJECT_ID_LENGTH = _length(_LEDGER.subject_id)
"""The longest ``data.id`` stored for any event."""
MAX_USER_ID_LENGTH = min(MAX_SUBJECT_ID_LENGTH, _length(_USERS.id), _length(_TOMBSTONES.user_id))
"""The longest user id stored (users table and tombstones)."""
MAX_EMAIL_LENGTH = _length(_USERS.email)
"""The longest user email stored."""
_KIND_TOMBSTONES = _columns(WorkOSTombstone)


def _bounded_fields(table: Any, *, tombstoned: bool) -> tuple[tuple[str, int], ...]:
    """The string fields of a mirrored kind written to bounded columns, with their limits.

    ``id`` is also bounded by the ledger's subject column and, for a kind with tombstones, by the
    tombstone id column.
    """
    limits: list[tuple[str, int]] = []
    for column in _columns(table):
        length = getattr(column.type, "length", None)
        if not isinstance(length, int):
            continue
        if column.key == "id":
            length = min(length, MAX_SUBJECT_ID_LENGTH)
            if tombstoned:
                length = min(length, _length(_KIND_TOMBSTONES.id))
        limits.append((column.key, length))
    return tuple(limits)


_BOUNDED_FIELDS: dict[type[BaseModel], tuple[tuple[str, int], ...]] = {
    Organization: _bounded_fields(WorkOSOrganization, tombstoned=True),
    OrganizationMembership: _bounded_fields(WorkOSOrganizationMembership, tombstoned=True),
    AuthSession: _bounded_fields(WorkOSSession, tombstoned=False),
}


def _data_limits(data: Any, subject: str | None) -> list[tuple[str, str, int]]:
    """``(field, value, limit)`` for every bounded value of an event's data."""
    limits: list[tuple[str, str, int]] = []
    if isinstance(data, User | DeletedUser):
        limits.append(("data.id", data.id, MAX_USER_ID_LENGTH))
        if data.email is not None:
            limits.append(("data.email", data.email, MAX_EMAIL_LENGTH))
    elif type(data) in _BOUNDED_FIELDS:
        for name, limit in _BOUNDED_FIELDS[type(data)]:
            value = getattr(data, name, None)
            if isinstance(value, str):
                limits.append((f"data.{name}", value, limit))
    elif subject is not None:
        limits.append(("data.id", subject, MAX_SUBJECT_ID_LENGTH))
    return limits


def _refuse_long(limits: list[tuple[str, str, int]], what: str) -> None:
    # Name the field and its limit, never the value.
    problems = [
        f"{name} is longer than {limit} characters"
        for name, value, limit in limits
        if len(value) > limit
    ]
    if problems:
        raise InvalidEventError(f"Invalid {what}: " + "; ".join(problems))


def _check_lengths(event: Event[Any]) -> None:
    limits = [
        ("id", event.id, MAX_EVENT_ID_LENGTH),
        ("event", event.event, MAX_EVENT_TYPE_LENGTH),
    ]
    _refuse_long(limits + _data_limits(event.data, subject_of(event)), "event")


def check_snapshot(data: BaseModel) -> None:
    """Refuse a snapshot (a REST object) the mirror cannot store, with `InvalidEventError`.

    The same checks as `parse_event` makes on an event's data: every value written to a bounded
    column fits it (ids, a user's email, statuses), and the fields the kind's table needs are
    there (`require_sync_fields`). Just-in-time fetches and backfills call it, through
    `mirror.apply_snapshots`, before anything is written.
    """
    _refuse_long(_data_limits(data, getattr(data, "id", None)), "snapshot")
    require_sync_fields(data)


def parse_event(payload: Any) -> Event[Any]:
    """Validate decoded JSON into an `Event`; raise `InvalidEventError` if it is not one.

    Besides the shape, the values written to bounded columns (ids, the type, a user's email)
    must fit them: see `MAX_EVENT_ID_LENGTH` and its neighbours.
    """
    event = _validate(payload)
    _check_lengths(event)
    if event.event in MIRRORED_EVENT_TYPES and not event.event.endswith(".deleted"):
        require_sync_fields(event.data)
    return event


def _validate(payload: Any) -> Event[Any]:
    if not isinstance(payload, dict):
        raise InvalidEventError("An event must be a JSON object")
    event_type = payload.get("event")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventError("An event needs a string 'event' type")
    model = _TYPED_EVENTS[data_model_for(event_type)]
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        if event_type not in MIRRORED_EVENT_TYPES:
            # Typed data is a convenience; an odd payload for a type we do not sync keeps its raw
            # data rather than failing the delivery (a 4xx would only make WorkOS retry in vain).
            try:
                return _TYPED_EVENTS[None].model_validate(payload)
            except ValidationError:
                pass
        raise InvalidEventError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    # Name the fields, never echo their values: they may hold personal data.
    problems = [
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    ]
    return "Invalid event: " + "; ".join(problems[:5])
