"""The webhook ingest scenario: wrk posts unique, pre-signed ``user.created`` deliveries to our
webhook route and, in the same run, to the hand-written floor (an HMAC check plus one
``INSERT ... ON CONFLICT DO NOTHING`` in a thread), on SQLite and PostgreSQL, with one and two
uvicorn workers. Afterwards every delivery's event must be in the ledger exactly once.

The deliveries are signed just before each wrk run, so the whole run stays inside the signature
tolerance. Each run stops after as many answers as there are deliveries (wrk's Lua script counts
them), so no delivery is sent twice and the rate is unique events per second.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from fastapi_workos_authkit._routes.signatures import sign_header
from fastapi_workos_authkit._sync.database import make_engine
from fastapi_workos_authkit._sync.ledger import ledger_table
from fastapi_workos_authkit.testing import encode, factories

from . import wrk
from .processes import AppServer

WEBHOOK_PATH = "/workos/webhook"
FLOOR_PATH = "/bench/floor"
CONNECTIONS = 32


def _deliveries(tag: str, count: int, secret: str) -> tuple[list[str], list[tuple[str, str]]]:
    """``count`` unique ``user.created`` events, each signed now: (event ids, wrk items)."""
    ids: list[str] = []
    items: list[tuple[str, str]] = []
    for number in range(count):
        event_id = f"event_{tag}_{number:07d}"
        body = encode(factories.user_created(f"user_{tag}_{number:07d}", event_id=event_id))
        ids.append(event_id)
        items.append((sign_header(body, secret), body.decode()))
    return ids, items


def _ledger_counts(url: str, ids: list[str]) -> tuple[int, int]:
    """(events of ``ids`` in the ledger as processed, ledger rows for them in all)."""
    engine = make_engine(url)
    table = ledger_table()
    wanted = set(ids)
    processed = rows = 0
    try:
        with engine.connect() as connection:
            for event_id, status in connection.execute(
                select(table.c.id, table.c.status).where(table.c.id.like(ids[0][:-7] + "%"))
            ):
                if event_id in wanted:
                    rows += 1
                    processed += status == "processed"
    finally:
        engine.dispose()
    return processed, rows


async def _drive(
    base_url: str, path: str, items: list[tuple[str, str]], *, workdir: Path, name: str
) -> dict[str, Any]:
    return await wrk.run_wrk(
        base_url,
        path,
        workdir=workdir,
        items=items,
        header="WorkOS-Signature",
        method="POST",
        connections=CONNECTIONS,
        seconds=170,  # a ceiling inside the 180 s tolerance; the run stops at len(items)
        limit=len(items),
        name=name,
    )


async def measure(
    database_url: str,
    secret: str,
    *,
    workers: int,
    deliveries: int,
    workdir: Path,
    label: str,
    environment: dict[str, str],
    rounds: int = 1,
) -> dict[str, Any]:
    """Ours beside the floor on one database and worker count; ``rounds`` alternations."""
    app = AppServer(
        {**environment, "BENCH_DATABASE_URL": database_url},
        workers=workers,
        log_path=workdir / f"uvicorn-{label}.log",
    )
    app.start()
    ours_runs: list[dict[str, Any]] = []
    floor_runs: list[dict[str, Any]] = []
    all_ids: list[str] = []
    try:
        # A short warm-up of both endpoints: imports, pools and prepared statements.
        for path, tag in ((WEBHOOK_PATH, "warm"), (FLOOR_PATH, "warmfloor")):
            _, items = _deliveries(f"{label}{tag}", 200, secret)
            await _drive(app.base_url, path, items, workdir=workdir, name=f"{label}-{tag}")
        for round_number in range(rounds):
            ids, items = _deliveries(f"{label}r{round_number}", deliveries, secret)
            all_ids.extend(ids)
            ours_runs.append(
                await _drive(
                    app.base_url, WEBHOOK_PATH, items, workdir=workdir, name=f"{label}-ours"
                )
            )
            _, floor_items = _deliveries(f"{label}f{round_number}", deliveries, secret)
            floor_runs.append(
                await _drive(
                    app.base_url, FLOOR_PATH, floor_items, workdir=workdir, name=f"{label}-floor"
                )
            )
    finally:
        app.stop()
    processed = rows = 0
    for round_number in range(rounds):
        round_ids = all_ids[round_number * deliveries : (round_number + 1) * deliveries]
        got = _ledger_counts(database_url, round_ids)
        processed += got[0]
        rows += got[1]
    ours_rps = sum(run["rps"] for run in ours_runs) / len(ours_runs)
    floor_rps = sum(run["rps"] for run in floor_runs) / len(floor_runs)
    return {
        "workers": workers,
        "deliveries_per_run": deliveries,
        "ours": ours_runs,
        "floor": floor_runs,
        "ours_rps": round(ours_rps, 1),
        "floor_rps": round(floor_rps, 1),
        "ratio": round(ours_rps / floor_rps, 3) if floor_rps else None,
        "ratios_per_round": [
            round(o["rps"] / f["rps"], 3) if f["rps"] else None
            for o, f in zip(ours_runs, floor_runs, strict=True)
        ],
        "non_2xx": sum(run["non_2xx"] for run in ours_runs + floor_runs),
        "socket_errors": sum(run["socket_errors"] for run in ours_runs + floor_runs),
        "ledger_processed": processed,
        "ledger_rows": rows,
        "expected": len(all_ids),
    }


async def scenario_ingest(
    postgres_url: str,
    secret: str,
    *,
    workdir: Path,
    deliveries: int,
    rounds: int,
    environment: dict[str, str],
    prepare: Any,
) -> dict[str, Any]:
    """Scenario 7: ours and the floor on SQLite and PostgreSQL, one and two workers."""
    figures: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    began = time.perf_counter()
    sqlite_url = f"sqlite:///{workdir / 'ingest.db'}"
    for backend, url in (("sqlite", sqlite_url), ("postgresql", postgres_url)):
        prepare(url)
        for workers in (1, 2):
            label = f"{backend[:2]}{workers}"
            result = await measure(
                url,
                secret,
                workers=workers,
                deliveries=deliveries,
                workdir=workdir,
                label=label,
                environment=environment,
                rounds=rounds,
            )
            key = f"{backend}_{workers}_worker{'s' if workers > 1 else ''}"
            figures[key] = result
            checks[f"{key}_every_delivery_in_ledger_exactly_once"] = (
                result["ledger_processed"] == result["expected"] == result["ledger_rows"]
            )
            checks[f"{key}_every_answer_2xx"] = result["non_2xx"] == 0
            checks[f"{key}_ratio_at_least_0.6"] = (result["ratio"] or 0) >= 0.6
    figures["ratios"] = {key: value["ratio"] for key, value in figures.items() if key != "ratios"}
    figures["seconds"] = round(time.perf_counter() - began, 1)
    return {"figures": figures, "checks": checks}
