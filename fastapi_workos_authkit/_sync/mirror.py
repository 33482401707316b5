"""The mirror rules, written once for every kind of WorkOS object the package stores.

A kind (`MirrorKind`) is a table plus a few facts about it: how a wire model becomes column
values, which version of a row is newer, whether deletions leave tombstones, and which handlers
each effective change runs. Users, organizations, memberships and sessions are four kinds of the
same code. Every path that writes a mirrored row goes through here: `EventPipeline` for events
(webhooks, the Events API, replays) and for single snapshots (just-in-time fetches), the
backfills for pages of snapshots.

Longer than 400 lines on purpose: the rules, the per-kind specs they read and the statements
they run are one unit, tested once per kind by the same property tests; split, a reader would
have to hold three files to check one rule.

The rules, for every kind:

* a tombstoned id is left alone, so no late event or snapshot brings a deleted object back;
* a missing row is inserted (an update that arrives before its create inserts it);
* a strictly newer version replaces the row; an equal or older one changes nothing;
* a deletion removes the row and leaves a tombstone, also for an id never seen.

The version is ``updated_at`` for users, organizations and memberships. Sessions are never
deleted and have no tombstones; instead their status is terminal: a session stored as
``revoked`` or ``expired`` never changes again, whatever a later snapshot's timestamps say, and
a ``session.revoked`` event stores the session as revoked whether or not its create was seen.

Every call locks the ids it touches until the transaction ends (`database.lock_subjects`;
SQLite's ``BEGIN IMMEDIATE`` does the same there), so concurrent instances apply changes to one
object one at a time. Call these functions inside an open transaction of a `SyncSession` (or any
session whose SQLite transactions begin immediately): they never commit.

Tables and columns, for code that reads the mirror directly:

* ``workos_users`` (`WorkOSUser`), tombstones in ``workos_user_tombstones`` (``user_id``);
* ``workos_organizations`` (`WorkOSOrganization`);
* ``workos_organization_memberships`` (`WorkOSOrganizationMembership`): look one up by
  ``(user_id, organization_id)`` with `get_membership`; ``status`` is ``active``,
  ``inactive`` or ``pending``;
* ``workos_sessions`` (`WorkOSSession`): ``status`` is ``active``, ``expired`` or ``revoked``
  (`session_status`);
* ``workos_tombstones`` (`WorkOSTombstone`): ``(kind, id)`` for organizations and memberships
  (`is_tombstoned`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlmodel import Session

from .._config import OPTIONAL_KINDS as OPTIONAL_KINDS
from .._config import OptionalKind as OptionalKind
from .database import dialect_insert, lock_subjects
from .events import (
    AuthSession,
    Organization,
    OrganizationMembership,
    User,
    check_snapshot,
)
from .tables import (
    SessionStatus,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSTombstone,
    WorkOSUser,
    WorkOSUserTombstone,
)


class Effect(StrEnum):
    """What an event or snapshot did to its mirrored table."""

    INSERTED = "inserted"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"
    REVOKED = "revoked"
    """A session was stored as revoked: inserted so, or changed from active."""


KindName = Literal["user", "organization", "organization_membership", "session"]
"""The name of a mirrored kind: the prefix of its event types."""


_TERMINAL = frozenset({SessionStatus.REVOKED.value, SessionStatus.EXPIRED.value})
_EARLIEST = datetime.min.replace(tzinfo=UTC)

# SQLite: an IN list. PostgreSQL: one array parameter, "= ANY(:ids)". psycopg prepares a
# statement run often, and PostgreSQL then reuses a generic plan; an IN list of 100 parameters
# first planned on an empty table keeps its sequential scan as the table grows (a 100,000-user
# backfill went quadratic), while "= ANY(array)" plans as an index lookup.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_ID_ARRAY: BindParameter[Any] = bindparam("ids", type_=postgresql.ARRAY(String))


def _id_in(column: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    return column == any_(_ID_ARRAY) if dialect == "postgresql" else column.in_(_IDS)


class MirrorKind:
    """One kind of mirrored object: its table, tombstones, version and handler rules.

    Use the module's instances (`USER`, `ORGANIZATION`, `MEMBERSHIP`, `SESSION`, or `KINDS`
    by name); the functions of this module take one as their ``kind``.
    """

    def __init__(
        self,
        name: KindName,
        *,
        table: Table,
        model: type[BaseModel],
        values: Callable[[Any], dict[str, Any]],
        handlers: Mapping[Effect, str],
        version_columns: Sequence[str],
        version: Callable[[Mapping[str, Any]], Any],
        tombstones: Table | None = None,
        tombstone_id: str = "id",
        tombstone_kind: str | None = None,
        lock_prefix: str = "",
    ) -> None:
        self.name = name
        self.table = table
        """The mirrored table."""
        self.model = model
        """The wire model of its objects (events' ``data`` and REST objects)."""
        self.values = values
        """Column values (keyed by column name) of one object of `model`."""
        self.handlers: Mapping[Effect, str] = dict(handlers)
        """Which handlers an effective change runs: handlers follow the table, not the event."""
        self.event_types = frozenset(self.handlers.values())
        """The WorkOS event types that change the table (for the Events API): the same types
        whose handlers follow its effective changes."""
        self.version = version
        """The version of a row or of an object's values: a greater one is newer."""
        self.tombstones = tombstones
        self.tombstone_id = tombstone_id
        self.tombstone_kind = tombstone_kind
        self.lock_prefix = lock_prefix
        columns = [table.c[name] for name in version_columns]
        # Tombstones and stored versions in one statement (one round trip, one snapshot): the
        # rows of the tombstone half carry NULL versions and ``tombstone`` true.
        self._read: dict[str, Any] = {}
        for dialect in ("sqlite", "postgresql"):
            stored = select(table.c.id, *columns, literal(False).label("tombstone")).where(
                _id_in(table.c.id, dialect)
            )
            if tombstones is None:
                self._read[dialect] = stored
                continue
            tomb_id = tombstones.c[tombstone_id]
            buried = select(
                tomb_id.label("id"),
                *(cast(null(), column.type).label(column.key) for column in columns),
                literal(True).label("tombstone"),
            ).where(_id_in(tomb_id, dialect))
            if tombstone_kind is not None:
                buried = buried.where(tombstones.c.kind == tombstone_kind)
            self._read[dialect] = union_all(stored, buried)
        self._insert = insert(table)
        self._update = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values({c.key: bindparam(f"b_{c.key}") for c in table.columns if c.key != "id"})
        )

    def __repr__(self) -> str:
        return f"MirrorKind({self.name!r})"

    def handler_types(self) -> frozenset[str]:
        """The event types whose handlers follow this kind's effective changes."""
        return self.event_types

    def lock(self, session: Session, ids: Iterable[str]) -> None:
        """Lock ``ids`` of this kind until the transaction ends (see `lock_subjects`)."""
        lock_subjects(session, [f"{self.lock_prefix}{object_id}" for object_id in ids])


def _by_updated_at(row: Mapping[str, Any]) -> Any:
    return row["updated_at"]


def _session_version(row: Mapping[str, Any]) -> Any:
    # A terminal status outranks any active snapshot, and all terminal versions are equal, so
    # the first ended state stored is kept: "revoked" never turns back into "active", nor into
    # "expired" because of a later snapshot.
    if row["status"] in _TERMINAL:
        return (1, _EARLIEST)
    return (0, row["updated_at"] or _EARLIEST)


def user_values(user: User) -> dict[str, Any]:
    """A user's column values, keyed by column name (the metadata column is ``metadata``)."""
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "name": user.name,
        "profile_picture_url": user.profile_picture_url,
        "external_id": user.external_id,
        "metadata": dict(user.metadata),
        "last_sign_in_at": user.last_sign_in_at,
        "locale": user.locale,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def organization_values(organization: Organization) -> dict[str, Any]:
    """An organization's column values; ``domains`` are kept as WorkOS sent them."""
    return {
        "id": organization.id,
        "name": organization.name,
        "external_id": organization.external_id,
        "domains": [domain.model_dump(mode="json") for domain in organization.domains],
        "metadata": dict(organization.metadata),
        "created_at": organization.created_at,
        "updated_at": organization.updated_at,
    }


def membership_values(membership: OrganizationMembership) -> dict[str, Any]:
    """A membership's column values: ``role`` is the primary role's slug, ``roles`` every slug.

    Without a ``roles`` list (older payloads), ``roles`` is the primary role alone.
    """
    role = membership.role.slug if membership.role is not None else None
    if membership.roles is not None:
        roles = [item.slug for item in membership.roles]
    else:
        roles = [role] if role is not None else []
    return {
        "id": membership.id,
        "user_id": membership.user_id,
        "organization_id": membership.organization_id,
        "status": membership.status,
        "role": role,
        "roles": roles,
        "directory_managed": membership.directory_managed,
        "custom_attributes": dict(membership.custom_attributes),
        "created_at": membership.created_at,
        "updated_at": membership.updated_at,
    }


def session_values(auth_session: AuthSession) -> dict[str, Any]:
    """A session's column values; a missing status is taken to be ``active``."""
    impersonator = auth_session.impersonator
    return {
        "id": auth_session.id,
        "user_id": auth_session.user_id,
        "organization_id": auth_session.organization_id,
        "status": auth_session.status or SessionStatus.ACTIVE.value,
        "auth_method": auth_session.auth_method,
        "impersonator": impersonator.model_dump(mode="json") if impersonator else None,
        "ip_address": auth_session.ip_address,
        "user_agent": auth_session.user_agent,
        "expires_at": auth_session.expires_at,
        "ended_at": auth_session.ended_at,
        "created_at": auth_session.created_at,
        "updated_at": auth_session.updated_at,
    }


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


_KIND_TOMBSTONES = _table(WorkOSTombstone)


def _lifecycle(name: str) -> dict[Effect, str]:
    """The handlers of a created/updated/deleted kind: ``{name}.created`` for an insert..."""
    return {
        Effect.INSERTED: f"{name}.created",
        Effect.UPDATED: f"{name}.updated",
        Effect.DELETED: f"{name}.deleted",
    }


USER = MirrorKind(
    "user",
    table=_table(WorkOSUser),
    model=User,
    values=user_values,
    handlers=_lifecycle("user"),
    version_columns=("updated_at",),
    version=_by_updated_at,
    tombstones=_table(WorkOSUserTombstone),
    tombstone_id="user_id",
    # Users keep the bare id as their lock key, as before kinds existed.
    lock_prefix="",
)
"""Users: ``workos_users``, tombstones in ``workos_user_tombstones``."""

ORGANIZATION = MirrorKind(
    "organization",
    table=_table(WorkOSOrganization),
    model=Organization,
    values=organization_values,
    handlers=_lifecycle("organization"),
    version_columns=("updated_at",),
    version=_by_updated_at,
    tombstones=_KIND_TOMBSTONES,
    tombstone_kind="organization",
    lock_prefix="organization:",
)
"""Organizations: ``workos_organizations``, tombstones in ``workos_tombstones``."""

MEMBERSHIP = MirrorKind(
    "organization_membership",
    table=_table(WorkOSOrganizationMembership),
    model=OrganizationMembership,
    values=membership_values,
    handlers=_lifecycle("organization_membership"),
    version_columns=("updated_at",),
    version=_by_updated_at,
    tombstones=_KIND_TOMBSTONES,
    tombstone_kind="organization_membership",
    lock_prefix="organization_membership:",
)
"""Memberships: ``workos_organization_memberships``, tombstones in ``workos_tombstones``."""

SESSION = MirrorKind(
    "session",
    table=_table(WorkOSSession),
    model=AuthSession,
    values=session_values,
    handlers={Effect.INSERTED: "session.created", Effect.REVOKED: "session.revoked"},
    version_columns=("status", "updated_at"),
    version=_session_version,
    lock_prefix="session:",
)
"""Sessions: ``workos_sessions``; no tombstones, a terminal status instead."""

KINDS: dict[str, MirrorKind] = {
    kind.name: kind for kind in (USER, ORGANIZATION, MEMBERSHIP, SESSION)
}
"""Every mirrored kind by name."""


def kind_named(name: str) -> MirrorKind:
    """The kind called ``name``; `ValueError` naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ValueError(f"Unknown mirrored kind {name!r}: use one of {known}") from None


def kind_of_event(event_type: str) -> MirrorKind | None:
    """The kind whose table ``event_type``'s family is about (``organization.updated`` →
    `ORGANIZATION`), or ``None`` (``organization_domain.verified``, ``role.created``)."""
    return KINDS.get(event_type.partition(".")[0])


def _classify(kind: MirrorKind, effect: Effect, values: Mapping[str, Any]) -> Effect:
    # A session that becomes revoked (inserted so, or changed from active) runs the
    # session.revoked handlers; one that becomes expired stays UPDATED, as no event names it.
    revoked_now = values.get("status") == SessionStatus.REVOKED.value
    if kind is SESSION and effect is not Effect.UNCHANGED and revoked_now:
        return Effect.REVOKED
    return effect


def apply_snapshots(session: Session, kind: MirrorKind, objects: Sequence[Any]) -> list[Effect]:
    """Apply snapshots of one kind under the rules above; return each one's effect, in order.

    ``objects`` are instances of ``kind.model`` (events' data or REST objects); each is checked
    with `events.check_snapshot` first (`InvalidEventError` if it cannot be stored, before any
    write). A page costs a handful of statements whatever its size: one lock, two reads, at
    most one insert and one update (both executemany). If an id appears twice, its newest
    snapshot is applied and the other gets `Effect.UNCHANGED`. Call it inside an open
    transaction; it never commits.
    """
    rows = []
    for item in objects:
        check_snapshot(item)
        rows.append(kind.values(item))
    newest: dict[str, int] = {}
    for index, values in enumerate(rows):
        current = newest.get(values["id"])
        if current is None or kind.version(values) > kind.version(rows[current]):
            newest[values["id"]] = index
    ids = list(newest)
    if not ids:
        return []
    kind.lock(session, ids)
    # The statements are built once per kind and run on the session's connection: they are
    # Core statements, and the ORM's execute path cost more than the queries on the hot path.
    connection = session.connection()
    dialect = connection.dialect.name
    tombstoned: set[str] = set()
    stored: dict[str, Any] = {}
    for row in connection.execute(kind._read[dialect], {"ids": ids}).mappings():
        if row["tombstone"]:
            tombstoned.add(row["id"])
        else:
            stored[row["id"]] = kind.version(dict(row))
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    effects: dict[int, Effect] = {}
    for object_id, index in newest.items():
        values = rows[index]
        if object_id in tombstoned:
            effect = Effect.UNCHANGED
        elif object_id not in stored:
            inserts.append(values)
            effect = Effect.INSERTED
        elif kind.version(values) > stored[object_id]:
            updates.append({f"b_{name}": value for name, value in values.items()})
            effect = Effect.UPDATED
        else:
            effect = Effect.UNCHANGED
        effects[index] = _classify(kind, effect, values)
    if inserts:
        connection.execute(kind._insert, inserts)
    if updates:
        connection.execute(kind._update, updates)
    return [effects.get(index, Effect.UNCHANGED) for index in range(len(rows))]


def apply_snapshot(session: Session, kind: MirrorKind, obj: Any) -> Effect:
    """`apply_snapshots` for one object."""
    return apply_snapshots(session, kind, [obj])[0]


def unchanged_reason(
    session: Session, kind: MirrorKind, obj: Any
) -> Literal["stale", "tombstoned", "unchanged"]:
    """Why a snapshot of ``obj`` changed nothing (call it after `apply_snapshot` said so).

    ``"tombstoned"`` when its id was deleted, ``"stale"`` when the stored row is newer (or, for
    a session, already ended), ``"unchanged"`` when the row already holds this version.
    """
    values = kind.values(obj)
    connection = session.connection()
    rows = connection.execute(kind._read[connection.dialect.name], {"ids": [values["id"]]})
    stored = None
    for row in rows.mappings():
        if row["tombstone"]:
            return "tombstoned"
        stored = kind.version(dict(row))
    if stored is not None and stored > kind.version(values):
        return "stale"
    return "unchanged"


def apply_deletion(
    session: Session,
    kind: MirrorKind,
    object_id: str,
    *,
    deleted_at: datetime,
    event_id: str | None = None,
) -> Effect:
    """Remove an object and leave a tombstone, also for an id never seen (so it cannot appear).

    Returns `Effect.DELETED` when a row was removed, else `Effect.UNCHANGED`. Sessions have no
    deletions (`ValueError`): they end, and `prune_ended_sessions` removes them later.
    """
    tombstones = kind.tombstones
    if tombstones is None:
        raise ValueError(f"{kind.name} objects are never deleted, so they have no tombstones")
    kind.lock(session, [object_id])
    table = kind.table
    removed = session.execute(delete(table).where(table.c.id == object_id).returning(table.c.id))
    existed = removed.first() is not None
    row: dict[str, Any] = {kind.tombstone_id: object_id, "deleted_at": deleted_at}
    row["event_id"] = event_id
    keys = [kind.tombstone_id]
    if kind.tombstone_kind is not None:
        row["kind"] = kind.tombstone_kind
        keys = ["kind", kind.tombstone_id]
    statement = dialect_insert(session, tombstones).values(**row)
    session.execute(statement.on_conflict_do_nothing(index_elements=keys))
    return Effect.DELETED if existed else Effect.UNCHANGED


def revoked(auth_session: AuthSession) -> AuthSession:
    """The session a ``session.revoked`` event stores: its data, with status ``revoked``."""
    return auth_session.model_copy(update={"status": SessionStatus.REVOKED.value})


# -- reads ---------------------------------------------------------------------------------


def get_membership(
    session: Session, user_id: str, organization_id: str
) -> WorkOSOrganizationMembership | None:
    """The mirrored membership of ``user_id`` in ``organization_id``, whatever its status.

    WorkOS keeps one membership per pair; should the mirror hold two (one deleted and created
    again while a tombstone was pruned, say), the most recently updated one is returned.
    """
    table = WorkOSOrganizationMembership
    query = (
        select(table)
        .where(table.user_id == user_id)  # type: ignore[arg-type]
        .where(table.organization_id == organization_id)  # type: ignore[arg-type]
        .order_by(table.updated_at.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    found: WorkOSOrganizationMembership | None = session.execute(query).scalars().first()
    return found


def session_status(session: Session, session_id: str) -> str | None:
    """The mirrored status of session ``session_id`` (``active``, ``expired``, ``revoked``), or
    ``None`` when it is not mirrored."""
    table = SESSION.table
    status: str | None = session.execute(
        select(table.c.status).where(table.c.id == session_id)
    ).scalar_one_or_none()
    return status


def is_tombstoned(session: Session, kind: MirrorKind, object_id: str) -> bool:
    """Whether ``object_id`` of ``kind`` was deleted (its tombstone is still kept)."""
    tombstones = kind.tombstones
    if tombstones is None:
        return False
    query = select(tombstones.c[kind.tombstone_id]).where(
        tombstones.c[kind.tombstone_id] == object_id
    )
    if kind.tombstone_kind is not None:
        query = query.where(tombstones.c.kind == kind.tombstone_kind)
    return session.execute(query).first() is not None


# -- housekeeping --------------------------------------------------------------------------


def prune_tombstones(session: Session, older_than: datetime) -> dict[str, int]:
    """Delete tombstones of every kind whose ``deleted_at`` is before ``older_than``.

    Returns how many were deleted, by kind name. The caller chooses ``older_than`` under the
    users' rules: at least WorkOS's 3-day retry window ago, and no later than the event at the
    Events API cursor (a tombstone is stamped with its delete event's ``created_at``). It
    covers the users' tombstones too, so it replaces a separate statement for them. Does not
    commit.
    """
    counts: dict[str, int] = {}
    users = _table(WorkOSUserTombstone)
    result = session.execute(delete(users).where(users.c.deleted_at < older_than))
    counts[USER.name] = int(result.rowcount)  # type: ignore[attr-defined]
    for kind in (ORGANIZATION, MEMBERSHIP):
        result = session.execute(
            delete(_KIND_TOMBSTONES)
            .where(_KIND_TOMBSTONES.c.kind == kind.tombstone_kind)
            .where(_KIND_TOMBSTONES.c.deleted_at < older_than)
        )
        counts[kind.name] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts


def prune_ended_sessions(session: Session, older_than: datetime) -> int:
    """Delete sessions that ended or expired before ``older_than``; return how many.

    A session goes when it was revoked or expired with its ``ended_at`` (else its
    ``updated_at``) before ``older_than``, or when its ``expires_at`` is before ``older_than``
    whatever its status (WorkOS sends no event when a session expires). Keep ``older_than`` at
    least 3 days ago, WorkOS's retry window: a late ``session.created`` for a pruned revoked
    session would store it again as active. Does not commit.
    """
    table = SESSION.table
    ended = func.coalesce(table.c.ended_at, table.c.updated_at)
    result = session.execute(
        delete(table).where(
            or_(
                and_(table.c.status.in_(sorted(_TERMINAL)), ended < older_than),
                table.c.expires_at < older_than,
            )
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class KindCount:
    """How many rows and tombstones one kind has (sessions have no tombstones: 0)."""

    rows: int
    tombstones: int


def count_rows(session: Session) -> dict[str, KindCount]:
    """Rows and tombstones per kind name, for a status report (one query per table)."""
    counts: dict[str, KindCount] = {}
    kind_tombstones: dict[str, int] = {
        kind: int(number)
        for kind, number in session.execute(
            select(_KIND_TOMBSTONES.c.kind, func.count()).group_by(_KIND_TOMBSTONES.c.kind)
        )
    }
    for kind in KINDS.values():
        rows = session.execute(select(func.count()).select_from(kind.table)).scalar_one()
        if kind.tombstone_kind is not None:
            tombstones = kind_tombstones.get(kind.tombstone_kind, 0)
        elif kind.tombstones is not None:
            tombstones = session.execute(
                select(func.count()).select_from(kind.tombstones)
            ).scalar_one()
        else:
            tombstones = 0
        counts[kind.name] = KindCount(rows=int(rows), tombstones=int(tombstones))
    return counts
