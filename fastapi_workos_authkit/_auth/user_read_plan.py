"""The primary-key read of `UserStore`, compiled once per engine: the ``SELECT`` of a
`WorkOSUser` row (with the status of the token's session riding along), its parameters in the
dialect's order, and the column result processors that turn a raw row into attribute values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, bindparam, inspect, select

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
    )


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
