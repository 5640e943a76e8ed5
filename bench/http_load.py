"""HTTP load for ``predictq api``: lone jobs, N concurrent clients, and bulk, end to end.

The load runs on the same CPUs as the server it measures, so it must cost little per request:
httpx spends about as much CPU on a request as the server's whole budget for a job (1 ms), and
would cap the figures at the client. This client writes HTTP/1.1 requests by hand on keep-alive
connections and reads the responses by their Content-Length (or chunks).

It imports nothing of predictq, so ``bench/ab.py --http`` runs it against older checkouts too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import numpy as np
import psutil

Figures = dict[str, Any]
WAIT = 10  # seconds a long-poll may wait, as the measurements did


class HttpError(RuntimeError):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self._auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON body) of one request."""
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._auth}"
        data = b""
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + data)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            payload = bytearray()
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                payload += chunk[:-2]
            content = bytes(payload)
        else:
            content = await self._reader.readexactly(length or 0)
        return status, json.loads(content) if content else None


def percentiles(latencies: list[float]) -> Figures:
    if not latencies:
        return {}
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


class ServerCpu:
    """CPU seconds (user + system) of a server process and its children, over a span."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._start = 0.0

    def _now(self) -> float:
        total = 0.0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def __enter__(self) -> ServerCpu:
        self._start = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._now() - self._start


async def _one_job(
    conn: Connection, model: str, row: list[float], expected: Any, check: Callable[..., None]
) -> None:
    status, body = await conn.request("POST", f"/v1/models/{model}/jobs", {"rows": [row]})
    if status != 202:
        raise HttpError(f"submit answered {status}: {body}")
    status, record = await conn.request("GET", f"/v1/jobs/{quote(body['id'], safe='')}?wait={WAIT}")
    check(status, record, expected)


def _checker(counts: dict[str, int]) -> Callable[..., None]:
    def check(status: int, record: Any, expected: Any) -> None:
        if status != 200 or record.get("status") != "succeeded":
            counts["failed"] += 1
        elif expected is not None and record["predictions"] != [expected]:
            counts["wrong"] += 1

    return check


async def _lone(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    warmup: int, cpu: ServerCpu,
) -> Figures:  # fmt: skip
    counts = {"failed": 0, "wrong": 0}
    check = _checker(counts)
    latencies = []
    async with Connection(host, port, key) as conn:
        for row, want in zip(rows[:warmup], expected[:warmup], strict=True):
            await _one_job(conn, model, row, want, check)
        counts["failed"] = counts["wrong"] = 0
        with cpu:  # the measured jobs only, as their count divides it
            began = time.perf_counter()
            for row, want in zip(rows[warmup:], expected[warmup:], strict=True):
                t = time.perf_counter()
                await _one_job(conn, model, row, want, check)
                latencies.append(time.perf_counter() - t)
            seconds = time.perf_counter() - began
    return {"jobs": len(latencies), "seconds": seconds, **counts, **percentiles(latencies)}


async def _concurrent(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    clients: int, seconds: float, cpu: ServerCpu,
) -> Figures:  # fmt: skip
    counts = {"failed": 0, "wrong": 0}
    check = _checker(counts)
    latencies: list[float] = []
    conns = [Connection(host, port, key) for _ in range(clients)]
    for c in conns:
        await c.__aenter__()
    start, warm = asyncio.Event(), asyncio.Event()
    warmed = 0

    async def loop(conn: Connection, offset: int) -> None:
        nonlocal warmed
        await _one_job(conn, model, rows[offset], expected[offset], check)  # not counted
        warmed += 1
        if warmed == clients:
            warm.set()
        await start.wait()
        i = offset
        while time.perf_counter() < end:
            t = time.perf_counter()
            await _one_job(conn, model, rows[i % len(rows)], expected[i % len(rows)], check)
            latencies.append(time.perf_counter() - t)
            i += clients

    end = float("inf")
    tasks = [asyncio.create_task(loop(c, i)) for i, c in enumerate(conns)]
    await warm.wait()
    counts["failed"] = counts["wrong"] = 0
    with cpu:
        began = time.perf_counter()
        end = began + seconds
        start.set()
        await asyncio.gather(*tasks)
        took = time.perf_counter() - began
    for c in conns:
        await c.__aexit__()
    return {"jobs": len(latencies), "seconds": took, **counts, **percentiles(latencies)}


async def _bulk(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    batch: int, bulk_wait: bool, cpu: ServerCpu,
) -> Figures:  # fmt: skip
    """Submit ``rows`` as single-row jobs through jobs:batch, and read every result back:
    through jobs:wait when ``bulk_wait``, else one long-poll GET per job on 16 connections."""
    counts = {"failed": 0, "wrong": 0}
    check = _checker(counts)
    chunks: asyncio.Queue[list[tuple[str, Any]] | None] = asyncio.Queue()

    async def submit() -> None:
        async with Connection(host, port, key) as conn:
            for start in range(0, len(rows), batch):
                jobs = [{"rows": [r]} for r in rows[start : start + batch]]
                status, body = await conn.request(
                    "POST", f"/v1/models/{model}/jobs:batch", {"jobs": jobs}
                )
                if status != 202:
                    raise HttpError(f"jobs:batch answered {status}: {body}")
                ids = [j["id"] for j in body["jobs"]]
                await chunks.put(list(zip(ids, expected[start : start + batch], strict=True)))
        await chunks.put(None)

    async def read_bulk() -> None:
        async with Connection(host, port, key) as conn:
            while (chunk := await chunks.get()) is not None:
                want = dict(chunk)
                while want:
                    status, body = await conn.request(
                        "POST", "/v1/jobs:wait", {"ids": list(want), "wait": WAIT}
                    )
                    if status != 200:
                        raise HttpError(f"jobs:wait answered {status}: {body}")
                    for record in body["jobs"]:
                        check(200, record, want.pop(record["id"]))

    async def read_each() -> None:
        pending: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

        async def reader() -> None:
            async with Connection(host, port, key) as conn:
                while (item := await pending.get()) is not None:
                    status, record = await conn.request(
                        "GET", f"/v1/jobs/{quote(item[0], safe='')}?wait={WAIT}"
                    )
                    check(status, record, item[1])

        readers = [asyncio.create_task(reader()) for _ in range(16)]
        while (chunk := await chunks.get()) is not None:
            for item in chunk:
                await pending.put(item)
        for _ in readers:
            await pending.put(None)
        await asyncio.gather(*readers)

    with cpu:
        began = time.perf_counter()
        await asyncio.gather(submit(), read_bulk() if bulk_wait else read_each())
        took = time.perf_counter() - began
    return {"jobs": len(rows), "seconds": took, **counts}


def _with_cpu(figures: Figures, cpu: ServerCpu) -> Figures:
    figures["jobs_per_s"] = figures["jobs"] / figures["seconds"]
    figures["server_cpu_ms_per_job"] = cpu.seconds * 1000 / max(figures["jobs"], 1)
    return figures


def lone(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    warmup: int, server_pid: int,
) -> Figures:  # fmt: skip
    """One client: submit, then long-poll, one job at a time."""
    cpu = ServerCpu(server_pid)
    figures = asyncio.run(_lone(host, port, key, model, rows, expected, warmup, cpu))
    return _with_cpu(figures, cpu)


def concurrent(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    clients: int, seconds: float, server_pid: int,
) -> Figures:  # fmt: skip
    """``clients`` connections, each in a closed loop of submit then long-poll."""
    cpu = ServerCpu(server_pid)
    figures = asyncio.run(
        _concurrent(host, port, key, model, rows, expected, clients, seconds, cpu)
    )
    return _with_cpu(figures, cpu)


def bulk(
    host: str, port: int, key: str, model: str, rows: list[Any], expected: list[Any],
    batch: int, server_pid: int, bulk_wait: bool = True,
) -> Figures:  # fmt: skip
    """jobs:batch submissions with the bulk wait (or one GET per job), end to end."""
    cpu = ServerCpu(server_pid)
    figures = asyncio.run(_bulk(host, port, key, model, rows, expected, batch, bulk_wait, cpu))
    return _with_cpu(figures, cpu)
