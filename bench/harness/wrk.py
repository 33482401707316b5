"""Drive an endpoint with wrk (the Debian package): a C load generator leaves the two cores to
the server far more than a Python one would. A small Lua script cycles through prepared
requests, optionally stops after a request count, and prints its figures as JSON."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from pathlib import Path
from typing import Any

_SCRIPT = r"""
local items = {}
local index = 0
local count = 0
local limit = %(limit)d
local method = "%(method)s"
local path = "%(path)s"

init = function(args)
  for line in io.lines("%(items)s") do
    local header, body = line:match("^([^\t]*)\t?(.*)$")
    items[#items + 1] = {header, body}
  end
end

request = function()
  index = index %% #items + 1
  local item = items[index]
  local headers = {}
  if item[1] ~= "" then headers["%(header)s"] = item[1] end
  if method == "POST" then
    headers["Content-Type"] = "application/json"
    return wrk.format(method, path, headers, item[2])
  end
  return wrk.format(method, path, headers)
end

%(response)s

done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\"requests\":%%d,\"duration_us\":%%d,\"status_errors\":%%d,\"connect_errors\":%%d," ..
    "\"read_errors\":%%d,\"write_errors\":%%d,\"timeouts\":%%d,\"p50_us\":%%d,\"p90_us\":%%d," ..
    "\"p99_us\":%%d,\"max_us\":%%d,\"mean_us\":%%d}\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""

# wrk's main thread sleeps for the whole duration whatever the threads do, so on reaching the
# limit the script leaves a flag file and the harness interrupts wrk (SIGINT prints the figures).
_STOP_AFTER = """
response = function(status, headers, body)
  count = count + 1
  if count == limit then
    local flag = io.open("%s", "w")
    flag:write("done")
    flag:close()
    wrk.thread:stop()
  end
end
"""


def available() -> bool:
    """Whether the wrk binary is installed."""
    return shutil.which("wrk") is not None


async def run_wrk(
    url: str,
    path: str,
    *,
    workdir: Path,
    items: list[tuple[str, str]] | None = None,
    header: str = "Authorization",
    method: str = "GET",
    connections: int = 64,
    seconds: float = 10,
    limit: int = 0,
    name: str = "run",
) -> dict[str, Any]:
    """Run wrk for ``seconds`` (or until ``limit`` answers) and return its figures.

    ``items`` are ``(header value, body)`` pairs sent in turn; the header is ``header``.
    """
    items_file = workdir / f"{name}.items"
    with items_file.open("w", encoding="utf-8") as handle:
        for value, body in items or [("", "")]:
            handle.write(f"{value}\t{body}\n")
    script = workdir / f"{name}.lua"
    flag = workdir / f"{name}.done"
    flag.unlink(missing_ok=True)
    script.write_text(
        _SCRIPT
        % {
            "limit": limit,
            "method": method,
            "path": path,
            "items": items_file,
            "header": header,
            "response": _STOP_AFTER % flag if limit else "",
        }
    )
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    communicating = asyncio.create_task(process.communicate())
    while limit and not communicating.done():
        if flag.exists():
            process.send_signal(signal.SIGINT)
            break
        await asyncio.sleep(0.2)
    stdout, stderr = await communicating
    text = stdout.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line[len("WRKJSON ") :])
            seconds_run = raw["duration_us"] / 1e6
            return {
                "requests": raw["requests"],
                "seconds": round(seconds_run, 2),
                "rps": round(raw["requests"] / seconds_run, 1) if seconds_run else 0.0,
                "p50_ms": round(raw["p50_us"] / 1000, 2),
                "p90_ms": round(raw["p90_us"] / 1000, 2),
                "p99_ms": round(raw["p99_us"] / 1000, 2),
                "max_ms": round(raw["max_us"] / 1000, 2),
                "non_2xx": raw["status_errors"],
                "socket_errors": raw["connect_errors"]
                + raw["read_errors"]
                + raw["write_errors"]
                + raw["timeouts"],
                "connections": connections,
            }
    raise RuntimeError(
        f"wrk gave no figures: {text[-500:]} {stderr.decode(errors='replace')[-500:]}"
    )
