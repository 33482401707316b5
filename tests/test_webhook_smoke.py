from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from fastapi_workos_authkit import AuthKit, WorkOSEventRecord, WorkOSUser
from fastapi_workos_authkit.testing import factories
from tests.conftest import deliver

pytestmark = pytest.mark.anyio


async def test_user_created_is_synced(
    client: httpx.AsyncClient, engine: Engine, authkit: AuthKit
) -> None:
    calls: list[str] = []

    @authkit.on("user.created")
    def record(session: Session, event: object) -> None:
        calls.append("created")

    payload = factories.user_created("user_01A", email="a@example.com", metadata={"k": "v"})
    response = await deliver(client, payload)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied", "event_id": payload["id"]}
    again = await deliver(client, payload)
    assert again.json()["status"] == "duplicate"
    with Session(engine) as session:
        user = session.get(WorkOSUser, "user_01A")
        assert user is not None
        assert user.email == "a@example.com"
        assert user.user_metadata == {"k": "v"}
        assert user.updated_at.tzinfo is not None
        records = session.exec(select(WorkOSEventRecord)).all()
        assert [r.status for r in records] == ["processed"]
    assert calls == ["created"]
