"""`doctor`: every group of checks, against the package's FakeWorkOS and a real database.

The story the command exists for comes first: an app whose handler type is missing from its
webhook endpoint fails `doctor`, which names the handler; `webhooks setup --yes` fixes it; and
`doctor` passes.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, WorkOSLease, WorkOSSyncState
from fastapi_workos_authkit._ops.doctor import (
    Check,
    DoctorReport,
    max_connections_per_process,
    run_doctor,
)
from fastapi_workos_authkit._ops.webhook_endpoints import (
    create_webhook_endpoint,
    update_webhook_endpoint,
)
from fastapi_workos_authkit._recovery.recovery import EVENTS_LAST_RUN
from fastapi_workos_authkit._sync.database import create_tables
from fastapi_workos_authkit.cli import main
from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS, FakeWorkOSServer
from fastapi_workos_authkit.testing.tokens import TokenFactory
from tests.conftest import WEBHOOK_SECRET, app_client, deliver

pytestmark = pytest.mark.anyio

API_KEY = "sk_doctor_key"
CLIENT_ID = "client_01DOCTOR"
URL = "https://app.example.com/workos/webhook"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

APP_MODULE = textwrap.dedent(
    """
    from fastapi_workos_authkit import AuthKit

    authkit = AuthKit()


    @authkit.on("role.created")
    def sync_roles(session, event) -> None:
        pass
    """
)


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key=API_KEY, jwks=TokenFactory(CLIENT_ID).jwks(), client_id=CLIENT_ID)


def kit_for(fake: FakeWorkOS, database_url: str, **options: object) -> AuthKit:
    values: dict[str, object] = {
        "client_id": CLIENT_ID,
        "api_key": API_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "api_base_url": "https://api.workos.test",
        "database_url": database_url,
    }
    values.update(options)
    return AuthKit(http_transport=fake.transport(), clock=NOW.timestamp, **values)


def lines(report: DoctorReport, status: str, group: str | None = None) -> list[str]:
    return [
        c.message
        for c in report.checks
        if c.status == status and (group is None or c.group == group)
    ]


async def doctor(kit: AuthKit, **kwargs: str) -> DoctorReport:
    try:
        return await run_doctor(kit, **kwargs)
    finally:
        await kit.shutdown()
        kit.engine.dispose()


async def add_endpoint(
    fake: FakeWorkOS, url: str, events: list[str], *, status: str = "enabled"
) -> str:
    kit = AuthKit(
        api_key=API_KEY, api_base_url="https://api.workos.test", http_transport=fake.transport()
    )
    created = await create_webhook_endpoint(kit.workos_api, url, events)
    if status != "enabled":
        await update_webhook_endpoint(kit.workos_api, created.endpoint.id, status="disabled")
    await kit.shutdown()
    return created.endpoint.id


def everything_needed(kit: AuthKit) -> list[str]:
    from fastapi_workos_authkit._ops.webhook_endpoints import needed_event_types

    return list(needed_event_types(kit))


# -- the story ------------------------------------------------------------------------------


@pytest.fixture
def served(fake: FakeWorkOS, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkOSServer]:
    for name in list(os.environ):
        if name.startswith(("WORKOS_", "AUTHKIT_")):
            monkeypatch.delenv(name)
    with FakeWorkOSServer(fake) as server:
        monkeypatch.setenv("WORKOS_API_BASE_URL", server.base_url)
        monkeypatch.setenv("WORKOS_API_KEY", API_KEY)
        monkeypatch.setenv("WORKOS_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("WORKOS_WEBHOOK_SECRET", "whsec_story_value")
        yield server


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_a_handler_missing_from_the_endpoint_fails_doctor_and_setup_fixes_it(
    served: FakeWorkOSServer,
    database_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", database_url)
    create_tables(engine)
    module = f"doctor_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE)
    app = ["--app", f"{module}:authkit", "--app-dir", str(tmp_path)]
    # The endpoint was made without the app: user.* and the mirrored kinds, no role.created.
    code, _, err = cli("webhooks", "setup", "--url", URL, "--yes")
    assert code == 0, err

    code, out, err = cli("doctor", *app)
    assert code == 1, out + err
    (failure,) = [line for line in out.splitlines() if line.startswith("fail")]
    assert "not subscribed to role.created" in failure
    assert f"handler {module}.sync_roles will never run" in failure
    assert f"webhooks setup --url {URL} --app {module}:authkit" in failure

    code, out, err = cli("webhooks", "setup", "--url", URL, *app, "--yes")
    assert code == 0, err
    assert "+ role.created" in err

    code, out, err = cli("doctor", *app)
    assert code == 0, out + err
    assert not [line for line in out.splitlines() if line.startswith("fail")]
    assert "subscribed to all" in out
    assert out.splitlines()[-1].startswith("doctor: 0 fail")


def test_doctor_names_what_each_secret_enables_and_never_prints_one(
    served: FakeWorkOSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("WORKOS_ACTION_SECRET", "action_value_do_not_print")
    secrets = [API_KEY, "whsec_story_value", "action_value_do_not_print"]
    code, out, err = cli("doctor")
    assert "WORKOS_WEBHOOK_SECRET is set: the webhook route (/workos/webhook)" in out
    assert "WORKOS_ACTION_SECRET is set" in out
    code, as_json, err = cli("--json", "doctor")
    report = json.loads(as_json)
    assert report["ok"] is False  # no endpoint yet
    assert code == 1
    for secret in secrets:
        assert secret not in out + err + as_json


# -- 1. settings ----------------------------------------------------------------------------


async def test_missing_settings_say_what_stops_working(fake: FakeWorkOS, tmp_path: Path) -> None:
    kit = AuthKit(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        api_base_url="https://api.workos.test",
        http_transport=fake.transport(),
    )
    kit.add_action_handler("authentication", lambda session, action, response: response.allow())
    report = await doctor(kit)
    warned = " | ".join(lines(report, "warn", "settings"))
    assert "WORKOS_CLIENT_ID is not set" in warned
    assert "WORKOS_API_KEY is not set" in warned
    assert "WORKOS_WEBHOOK_SECRET is not set" in warned
    assert lines(report, "fail", "settings") == [
        "WORKOS_ACTION_SECRET is not set, and Action handlers are registered: "
        "authkit.router() refuses to start"
    ]
    assert "JWKS not checked: WORKOS_CLIENT_ID is not set" in lines(report, "info", "tokens")
    assert "endpoint not checked: WORKOS_API_KEY is not set" in lines(report, "info", "webhooks")
    assert fake.requests == []


# -- 2. database ----------------------------------------------------------------------------


async def test_an_unreachable_database_fails_without_showing_its_password(
    fake: FakeWorkOS,
) -> None:
    kit = kit_for(fake, "postgresql://doctor:hunter2@127.0.0.1:1/nowhere")
    report = await doctor(kit)
    (failure,) = lines(report, "fail", "database")
    assert failure.startswith("cannot reach the database at postgresql+psycopg://doctor:***@")
    assert all("hunter2" not in c.message + c.fix for c in report.checks)
    assert report.failed
    assert not [c for c in report.checks if c.group == "sync"]  # nothing to read


async def test_missing_tables_warn_when_created_at_start_up_and_fail_when_not(
    fake: FakeWorkOS, database_url: str
) -> None:
    report = await doctor(kit_for(fake, database_url))
    assert any(m.startswith("missing tables workos_events") for m in lines(report, "warn"))
    report = await doctor(kit_for(fake, database_url, create_tables=False))
    assert any("create_tables=False" in m for m in lines(report, "fail", "database"))


def write_migrations(folder: Path, revision: str) -> None:
    (folder / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    (versions / f"{revision}_workos.py").write_text(
        f'revision = "{revision}"\ndown_revision = None\n'
    )


async def test_alembic_current_behind_and_unknown(
    fake: FakeWorkOS,
    database_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_tables(engine)
    report = await doctor(kit_for(fake, database_url))
    assert "Alembic is not in use (no alembic_version table)" in lines(report, "info")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('a1b2c3')"))
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("ALEMBIC_CONFIG", raising=False)

    report = await doctor(kit_for(fake, database_url))
    (unknown,) = lines(report, "warn", "database")
    assert unknown.startswith("Alembic is in use (database at a1b2c3), but its head is unknown")

    write_migrations(project, "a1b2c3")
    report = await doctor(kit_for(fake, database_url))
    assert "migrations are current (head a1b2c3)" in lines(report, "ok", "database")

    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'old000'"))
    report = await doctor(kit_for(fake, database_url))
    (behind,) = lines(report, "fail", "database")
    assert behind == "migrations are not current: the database is at old000, the head is a1b2c3"


# -- 3. tokens ------------------------------------------------------------------------------


async def test_a_wrong_client_id_shows_in_the_jwks_check(fake: FakeWorkOS, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    report = await doctor(kit_for(fake, database))
    assert lines(report, "ok", "tokens") == [
        f"the JWKS at https://api.workos.test/sso/jwks/{CLIENT_ID} holds 1 usable RS256 keys"
    ]
    report = await doctor(kit_for(fake, database, client_id="client_01SOMEONEELSE"))
    (failure,) = [c for c in report.checks if c.status == "fail" and c.group == "tokens"]
    assert "answered 404" in failure.message
    assert "check WORKOS_CLIENT_ID (client_01SOMEONEELSE)" in failure.fix


async def test_a_jwks_without_a_usable_rs256_key_fails(tmp_path: Path) -> None:
    key = TokenFactory(CLIENT_ID).jwks()["keys"][0]
    unusable = {
        "keys": [{**key, "alg": "RS512"}, {"kty": "EC", "kid": "ec"}, {**key, "n": "not base64!"}]
    }
    fake = FakeWorkOS(api_key=API_KEY, jwks=unusable)
    report = await doctor(kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}"))
    (failure,) = lines(report, "fail", "tokens")
    assert failure.endswith("holds 3 keys, none a usable RS256 signing key")


# -- 4. webhooks ----------------------------------------------------------------------------


async def test_no_endpoint_for_the_webhook_path_fails(fake: FakeWorkOS, tmp_path: Path) -> None:
    await add_endpoint(fake, "https://app.example.com/other/webhook", ["user.created"])
    kit = kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}", prefix="/auth")
    report = await doctor(kit)
    assert "WORKOS_API_KEY is valid" in lines(report, "ok", "webhooks")
    (failure,) = [c for c in report.checks if c.status == "fail" and c.group == "webhooks"]
    assert failure.message.startswith("no webhook endpoint whose URL ends with /auth/webhook")
    assert "webhooks setup --url https://<your app>/auth/webhook" in failure.fix


async def test_a_wildcard_in_additional_event_types_fails(fake: FakeWorkOS, tmp_path: Path) -> None:
    await add_endpoint(fake, URL, ["user.created"])
    kit = kit_for(
        fake, f"sqlite:///{tmp_path / 'db.sqlite'}", additional_event_types=["organization.*"]
    )
    report = await doctor(kit)
    (failure,) = lines(report, "fail", "webhooks")
    assert "'organization.*' is not an event type" in failure
    assert "without wildcards" in failure


async def test_a_refused_api_key_fails(fake: FakeWorkOS, tmp_path: Path) -> None:
    report = await doctor(kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}", api_key="sk_bad"))
    (failure,) = lines(report, "fail", "webhooks")
    assert failure == "WorkOS refused WORKOS_API_KEY (401)"


async def test_a_disabled_endpoint_fails_and_unused_types_warn(
    fake: FakeWorkOS, tmp_path: Path
) -> None:
    kit = kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}")
    needed = everything_needed(kit)
    endpoint_id = await add_endpoint(
        fake, URL + "/?from=dashboard", [*needed, "dsync.activated"], status="disabled"
    )
    report = await doctor(kit)
    assert lines(report, "fail", "webhooks") == [
        f"endpoint {endpoint_id} ({URL}/?from=dashboard) is disabled: WorkOS delivers nothing to it"
    ]
    (unused,) = lines(report, "warn", "webhooks")
    assert "subscribed to dsync.activated, which nothing in the app uses" in unused


async def test_a_missing_mirrored_type_fails_naming_the_table(
    fake: FakeWorkOS, tmp_path: Path
) -> None:
    kit = kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}")
    needed = [t for t in everything_needed(kit) if t != "organization.deleted"]
    await add_endpoint(fake, URL, needed)
    report = await doctor(kit)
    (failure,) = lines(report, "fail", "webhooks")
    assert failure.endswith(
        "is not subscribed to organization.deleted: the organization table (mirrored) will not "
        "hear of it"
    )


async def test_several_matching_endpoints_warn_each_is_checked_and_url_picks_one(
    fake: FakeWorkOS, tmp_path: Path
) -> None:
    kit = kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}")
    needed = everything_needed(kit)
    good = await add_endpoint(fake, URL, needed)
    stale = await add_endpoint(fake, "https://old.example.com/workos/webhook", ["user.created"])
    report = await doctor(kit)
    (several,) = lines(report, "warn", "webhooks")
    assert several.startswith("2 endpoints whose URL ends with /workos/webhook")
    failures = lines(report, "fail", "webhooks")
    assert failures
    assert all(stale in failure for failure in failures)

    report = await doctor(kit_for(fake, f"sqlite:///{tmp_path / 'db.sqlite'}"), url=URL)
    assert not lines(report, "fail", "webhooks")
    assert not lines(report, "warn", "webhooks")
    assert f"endpoint {good} ({URL}) is subscribed to all {len(needed)} needed types" in lines(
        report, "ok", "webhooks"
    )


# -- 5. sync --------------------------------------------------------------------------------


def save_last_run(engine: Engine, moment: datetime) -> None:
    with Session(engine) as session:
        session.merge(
            WorkOSSyncState(key=EVENTS_LAST_RUN, value=moment.isoformat(), updated_at=moment)
        )
        session.commit()


def sync_check(report: DoctorReport, needle: str) -> Check:
    (found,) = [c for c in report.checks if c.group == "sync" and needle in c.message]
    return found


async def test_the_catch_up_age_against_the_30_day_retention(
    fake: FakeWorkOS, database_url: str, engine: Engine
) -> None:
    create_tables(engine)
    report = await doctor(kit_for(fake, database_url))
    never = sync_check(report, "catch-up")
    assert never.status == "warn"
    assert "never ran" in never.message

    for days, status in ((1, "ok"), (10, "warn"), (29, "warn"), (31, "fail")):
        save_last_run(engine, NOW - timedelta(days=days))
        report = await doctor(kit_for(fake, database_url))
        assert sync_check(report, "catch-up").status == status, days
    assert "past WorkOS's 30-day retention" in sync_check(report, "catch-up").message


async def test_failed_events_and_held_leases_are_reported(
    fake: FakeWorkOS, database_url: str, engine: Engine
) -> None:
    kit = kit_for(fake, database_url)

    @kit.on("user.created")
    def broken(session: Session, event: object) -> None:
        raise RuntimeError("the CRM is down")

    async with app_client(kit) as client:
        answer = await deliver(
            client, factories.user_created(), timestamp_ms=int(NOW.timestamp() * 1000)
        )
        assert answer.status_code == 500
    report = await doctor(kit_for(fake, database_url))
    failed = sync_check(report, "failed events")
    assert failed.status == "warn"
    assert failed.message.startswith("1 failed events")
    assert "replay-failed" in failed.fix
    assert sync_check(report, "no lease held").status == "ok"

    with Session(engine) as session:
        session.add(
            WorkOSLease(
                name="sync_events",
                holder="web-1:42:abcd",
                acquired_at=NOW,
                expires_at=NOW + timedelta(seconds=60),
            )
        )
        session.commit()
    report = await doctor(kit_for(fake, database_url))
    assert sync_check(report, "lease sync_events held by web-1:42:abcd").status == "info"


# -- connections ----------------------------------------------------------------------------


async def test_the_per_process_connection_maximum_is_reported(
    fake: FakeWorkOS, backend: str, database_url: str
) -> None:
    kit = kit_for(fake, database_url)
    maximum = max_connections_per_process(kit)
    report = await doctor(kit)
    (line,) = lines(report, "info", "connections")
    if backend == "postgresql":
        assert isinstance(maximum, int)
        assert maximum > 0
        assert line == f"at most {maximum} database connections per process"
    else:
        assert maximum is None
        assert line.startswith("connections per process: not counted by AuthKit")


async def test_a_database_driver_that_is_not_installed_is_a_finding_not_a_crash(
    fake: FakeWorkOS,
) -> None:
    """Counting connections needs the engine's dialect; when the engine cannot even be built,
    the database check says why, and the count is skipped instead of raising out of doctor."""
    kit = kit_for(fake, "postgresql+nodriver://doctor@localhost/app")
    try:
        report = await run_doctor(kit)
    finally:
        await kit.shutdown()
    (database,) = lines(report, "fail", "database")
    assert database.startswith("cannot reach the database at postgresql+nodriver://doctor@")
    (line,) = lines(report, "info", "connections")
    assert line == (
        "connections per process: not counted (the engine cannot be built: see the database check)"
    )
