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
from .owners import owner_ttl
from .schemas import BatchSubmission, JobSubmission
from .services import Services

# KEYS: SUBMIT's two, then the owner key of each job. ARGV: SUBMIT's, then the owner's name
# ('' for none: chosen IDs are claimed before) and the owner keys' TTL. SUBMIT itself, then the
# owner of each job, when it wrote them all (a 0 means an ID was taken and nothing was written):
# one script call where a SET each after it cost the gateway more than the jobs did, and the
# jobs never exist without their owner.
SUBMIT_OWNED = (
    "local owned_for = table.remove(ARGV)\nlocal owner = table.remove(ARGV)\n"
    "local function submit()\n" + records.SUBMIT + "\nend\n"
    """local out = submit()
if type(out) == 'table' and owner ~= '' then
  for i = 1, #out do
    if out[i] ~= 1 then return out end
  end
  for i = 3, #KEYS do redis.call('SET', KEYS[i], owner, 'EX', owned_for) end
end
return out
"""
)
SUBMIT_OWNED_SHA = hashlib.sha1(SUBMIT_OWNED.encode()).hexdigest()
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
    except NotReplicated:
        # The jobs were enqueued: chosen IDs stay owned, so that resubmitting them (safe: an ID
        # that exists is not enqueued twice) or reading them works (see _blocking).
        raise
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
    owned_for = str(owner_ttl(int(shared["ttl"])))
    admit = len(ids)
    chunk = list(range(len(ids)))
    loaded = False
    while chunk:
        # Every ID is checked, generated ones too: redis-py sends a command again when the
        # connection drops, and the jobs of a first send that did run must not be written twice.
        script_keys, argv = client.submit_args(
            shared, chunk, ids, rows_json, svc.waiters.reply, True, admit
        )
        owners = [f"{_OWNER_PREFIX}{ids[i]}" for i in chunk] if owner is not None else []
        try:
            flags = await svc.aio.evalsha(
                SUBMIT_OWNED_SHA, len(script_keys) + len(owners), *script_keys, *owners, *argv,
                owner or "", owned_for,
            )  # fmt: skip
        except redis.exceptions.NoScriptError:
            if loaded:
                raise
            # A restarted Redis forgot the script, and ran nothing.
            await svc.aio.script_load(SUBMIT_OWNED)
            loaded = True
            continue
        except redis.ResponseError as e:
            if is_oom(e):
                raise out_of_memory() from e
            raise
        taken = client.taken(flags, chunk, admit)
        if taken and len(ids) == 1:
            svc.waiters.not_submitted(ids[0])
        admit = admit - len(taken) if taken else 0
        # Jobs whose ID exists were left alone; the others go again without them.
        chunk = [i for i in chunk if i not in taken] if taken else []


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
