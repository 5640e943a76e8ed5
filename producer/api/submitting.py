"""Submitting over HTTP: the Python client's checks, then one round trip on the event loop.

The client prepares the jobs (validation, JSON, messages) exactly as ``Client.submit_many`` does;
what differs is how they are written. Here the SUBMIT script and the owner records of generated
IDs go out in one pipeline on the gateway's asyncio connection, instead of two blocking calls in
the threadpool: a thread hop and a round trip saved per request. Two cases still take the
client's own blocking path in the threadpool, unchanged: PREDICTQ_MIN_REPLICAS (its WAIT must
share the script's connection, and its NotReplicated handling is the client's), and submissions
of more jobs than one SUBMIT call takes (the client's chunked, cancel-on-OOM loop).
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool

from registry import (
    DEFAULT_ALIAS,
    InvalidInput,
    JobNotFound,
    NotReplicated,
    RedisUnavailable,
    keys,
)
from registry.names import check_name

from .. import records
from ..admission import is_oom, out_of_memory
from ..client import SUBMIT_CHUNK
from .auth import Principal
from .owners import RECORD, RECORD_SHA, owner_ttl
from .schemas import BatchSubmission, JobSubmission
from .services import Services

_SUBMIT_SHA = hashlib.sha1(records.SUBMIT.encode()).hexdigest()
_OWNER_PREFIX = keys.owner("")


async def submit(
    svc: Services,
    who: Principal,
    model: str,
    jobs: list[Any],
    job_ids: list[str | None],
    target: JobSubmission | BatchSubmission,
) -> list[str]:
    """Claim caller-chosen IDs, enqueue the jobs, and record who owns generated ones."""
    chosen = [j for j in job_ids if j is not None]
    if chosen and len(chosen) != len(job_ids):
        raise InvalidInput("give every job of a batch a job_id, or none of them")
    if len(set(chosen)) != len(chosen):
        raise InvalidInput("job IDs repeat within the batch: give each job its own")
    client = svc.client
    alias = target.alias or DEFAULT_ALIAS
    check_name(model)
    check_name(alias, "alias")
    meta = client.cached_target(model, target.version, alias)
    if meta is None:  # a registry read, every PREDICTQ_ALIAS_CACHE_SECONDS at most
        meta = await run_in_threadpool(client.target, model, target.version, alias)
    ids, rows_json, shared = client.prepare(
        meta, model, jobs, version=target.version, alias=alias, job_ids=chosen or None,
        probabilities=target.probabilities, ttl=target.ttl,
    )  # fmt: skip
    ttl = int(shared["ttl"])
    claimed = await svc.owners.claim(who.name, chosen, ttl) if chosen else []
    try:
        if svc.settings.min_replicas or len(ids) > SUBMIT_CHUNK:
            await run_in_threadpool(_blocking, svc, who, ids, rows_json, shared, bool(chosen))
        else:
            await _write(svc, who, ids, rows_json, shared, chosen=bool(chosen))
    except BaseException:
        await svc.owners.release(who.name, claimed)
        raise
    return ids


async def _write(
    svc: Services, who: Principal, ids: list[str], rows_json: list[bytes],
    shared: dict[str, Any], *, chosen: bool,
) -> None:  # fmt: skip
    """One SUBMIT call, with the owner of each generated ID in the same round trip (chosen
    ones were claimed before); a refused submission leaves neither jobs nor owners."""
    owner = None if chosen else who.name
    gauge = svc.client.memory
    if gauge.due():
        await run_in_threadpool(gauge.check)
    else:
        gauge.check()
    if len(ids) == 1:
        # Its end is told on this process's list: its long-poll need not read the record.
        svc.waiters.submitting(ids[0], who.name, int(shared["ttl"]))
    try:
        await _chunks(svc, ids, rows_json, shared, owner)
    except BaseException:
        if len(ids) == 1:
            svc.waiters.not_submitted(ids[0])
        raise


async def _chunks(
    svc: Services, ids: list[str], rows_json: list[bytes], shared: dict[str, Any],
    owner: str | None,
) -> None:  # fmt: skip
    client = svc.client
    ttl = int(shared["ttl"])
    admit = len(ids)
    chunk = list(range(len(ids)))
    loaded = False
    while chunk:
        # Every ID is checked, generated ones too: redis-py sends a pipeline again when the
        # connection drops, and the jobs of a first send that did run must not be written twice.
        script_keys, argv = client.submit_args(
            shared, chunk, ids, rows_json, svc.waiters.reply, True, admit
        )
        pipe = svc.aio.pipeline(transaction=False)
        pipe.evalsha(_SUBMIT_SHA, len(script_keys), *script_keys, *argv)
        if owner is not None:
            pipe.evalsha(RECORD_SHA, 0, _OWNER_PREFIX, owner, owner_ttl(ttl),
                         *(ids[i] for i in chunk))  # fmt: skip
        flags, *owned = await pipe.execute(raise_on_error=False)
        if isinstance(flags, redis.exceptions.NoScriptError) and not loaded:
            # A restarted Redis forgot the scripts: SUBMIT ran nothing; the owners may be set.
            await _unown(svc, ids, chunk, owned)
            await svc.aio.script_load(records.SUBMIT)
            await svc.aio.script_load(RECORD)
            loaded = True
            continue
        if owned and isinstance(owned[0], redis.exceptions.NoScriptError):
            # Only RECORD was forgotten (another client loaded SUBMIT again since a restart).
            try:
                owned = [await svc.owners.record(owner or "", [ids[i] for i in chunk], ttl)]
            except redis.RedisError as e:
                owned = [e]
        if isinstance(flags, Exception):
            await _unown(svc, ids, chunk, owned)
            if is_oom(flags):
                raise out_of_memory() from flags
            raise flags
        try:
            taken = client.taken(flags, chunk, admit)
        except BaseException:
            await _unown(svc, ids, chunk, owned)
            raise
        failed = next((e for e in owned if isinstance(e, Exception)), None)
        if failed is not None:
            # The jobs went in and their owner did not (Redis filled up in between): taken back.
            await run_in_threadpool(client.cancel_many, [ids[i] for i in chunk])
            if is_oom(failed):
                raise out_of_memory(len(chunk)) from failed
            raise failed
        if taken and len(ids) == 1:
            svc.waiters.not_submitted(ids[0])
        admit = admit - len(taken) if taken else 0
        # Jobs whose ID exists were left alone; the others go again without them.
        chunk = [i for i in chunk if i not in taken] if taken else []


async def _unown(svc: Services, ids: list[str], chunk: list[int], owned: list[Any]) -> None:
    if owned and any(not isinstance(o, Exception) for o in owned):
        await svc.aio.delete(*(f"{_OWNER_PREFIX}{ids[i]}" for i in chunk))


def _blocking(
    svc: Services, who: Principal, ids: list[str], rows_json: list[bytes],
    shared: dict[str, Any], chosen: bool,
) -> None:  # fmt: skip
    """The client's own path (see the module docstring), in the threadpool."""
    client = svc.client
    try:
        client.enqueue(ids, rows_json, shared, svc.waiters.reply, chosen=chosen)
    except NotReplicated as e:
        # The jobs were enqueued. Chosen IDs stay owned, so that resubmitting them (safe: an ID
        # that exists is not enqueued twice) or reading them works; generated ones the caller
        # never learns, so they are taken back rather than left to run unseen.
        if chosen:
            raise
        said = e.message.partition(": it may")[0]
        try:
            client.cancel_many(e.job_ids[: e.enqueued])
        except JobNotFound:
            # Some never reached the primary, or were lost with it in a failover: nothing of
            # them can run. The others were cancelled before this was raised.
            pass
        except RedisUnavailable as gone:
            raise NotReplicated(
                f"{said}, and they could not be cancelled ({gone.message}): they may still run "
                "once; submit again with job_id set, so that a retry is never a second job"
            ) from e
        raise NotReplicated(
            said + ": the jobs were cancelled (any a worker had already started runs to its "
            "end); submit again, with job_id set to make retries safe"
        ) from e
    if not chosen:
        try:
            svc.owners.record_blocking(who.name, ids, int(shared["ttl"]))
        except redis.ResponseError as e:
            if not is_oom(e):
                raise
            # Redis filled up between the jobs and their owner: the submission is taken back.
            client.cancel_many(ids)
            raise out_of_memory(len(ids)) from e
