"""The primary-key read of `UserStore`, compiled once per engine: the ``SELECT`` of a
`WorkOSUser` row (with the status of the token's session riding along), its parameters in the
dialect's order, and the column result processors that turn a raw row into attribute values.
On PostgreSQL also the same read for many keys at once (`ReadBatches` sends it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, bindparam, func, inspect, select
from sqlalchemy.dialects.postgresql import ARRAY

from .._sync.tables import WorkOSSession, WorkOSUser


@dataclass(frozen=True)
class _ReadPlan:
    """The primary-key read, compiled once for one engine's dialect."""

    sql: str
    positional: bool
    session_first: bool  # positional SQL whose first parameter is the session id
    with_session: bool  # the row ends with the status of the token's session
    # in select order: (attribute name, SQLAlchemy's own result processor for that column)
    columns: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    # PostgreSQL only: the read of many keys, each row led by its key's 1-based position
    batch_sql: str | None = None


def _compile_plan(engine: Engine, *, with_session: bool) -> _ReadPlan:
    dialect = engine.dialect
    table = WorkOSUser.__table__  # type: ignore[attr-defined]
    query = select(table).where(table.c.id == bindparam("user_id"))
    if with_session:
        # The token's session rides along with the user: one statement, one round trip. A
        # scalar subquery (not a join) keeps the user row whatever the sessions table holds,
        # and is NULL for a sid never mirrored or a token without one.
        sessions = WorkOSSession.__table__  # type: ignore[attr-defined]
        status_of_sid = (
            select(sessions.c.status)
            .where(sessions.c.id == bindparam("session_id", type_=String()))
            .scalar_subquery()
        )
        query = query.add_columns(status_of_sid.label("session_status"))
    compiled = query.compile(dialect=dialect)
    batch_sql = _compile_batch(engine, with_session) if dialect.name == "postgresql" else None
    order = tuple(compiled.positiontup or ()) if compiled.positional else ()
    attributes = {
        column.key: prop.key for prop in inspect(WorkOSUser).column_attrs for column in prop.columns
    }
    return _ReadPlan(
        sql=str(compiled),
        positional=bool(compiled.positional),
        session_first=order[:1] == ("session_id",),
        with_session=with_session,
        columns=tuple(
            (
                attributes[column.key],
                column.type.dialect_impl(dialect).result_processor(dialect, None),
            )
            for column in table.columns
        ),
        batch_sql=batch_sql,
    )


def _compile_batch(engine: Engine, with_session: bool) -> str:
    """The read of many ``(user_id, session_id)`` keys in one statement, on PostgreSQL.

    The keys arrive as two arrays, unnested side by side with their positions; each key that
    names a user gives one row, led by its position, in the single read's column order. A user
    asked for twice (two requests, two sessions) gives two rows.
    """
    table = WorkOSUser.__table__  # type: ignore[attr-defined]
    names = ("user_id", "session_id") if with_session else ("user_id",)
    arrays = [bindparam(f"{name}s", type_=ARRAY(String())) for name in names]
    keys = (
        func.unnest(*arrays)
        .table_valued(*names, with_ordinality="position")
        .render_derived(name="k")
    )
    columns: list[Any] = [keys.c.position, *table.columns]
    if with_session:
        sessions = WorkOSSession.__table__  # type: ignore[attr-defined]
        status_of_sid = (
            select(sessions.c.status).where(sessions.c.id == keys.c.session_id).scalar_subquery()
        )
        columns.append(status_of_sid.label("session_status"))
    query = select(*columns).select_from(keys.join(table, table.c.id == keys.c.user_id))
    return str(query.compile(dialect=engine.dialect))


def _batch_params(plan: _ReadPlan, keys: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    params: dict[str, Any] = {"user_ids": [user_id for user_id, _ in keys]}
    if plan.with_session:
        params["session_ids"] = [session_id for _, session_id in keys]
    return params


def _fetch_on_engine(engine: Engine, sql: str, params: Any) -> Sequence[Any] | None:
    connection: Connection
    with engine.connect() as connection:
        return connection.exec_driver_sql(sql, params).first()


def _params(plan: _ReadPlan, user_id: str, session_id: str | None) -> Any:
    if not plan.positional:
        if plan.with_session:
            return {"user_id": user_id, "session_id": session_id}
        return {"user_id": user_id}
    if not plan.with_session:
        return (user_id,)
    return (session_id, user_id) if plan.session_first else (user_id, session_id)
