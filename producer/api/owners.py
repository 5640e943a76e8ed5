"""Which API key submitted which job, so that a key reads and cancels only its own jobs.

The owner is a key of its own (``predictq:owner:{id}``, holding the key's name, never the key),
so the job record and the scripts that write it stay the client's and the worker's alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import redis.asyncio

from registry import JobIdTaken, keys

# ARGV: owner key prefix, job key prefix, key name, ttl, then job IDs. For each ID: 'mine' when
# this key owns it already, 'taken' when another key owns it or the job exists without an owner
# (submitted outside HTTP), else 'new'. The 'new' ones are claimed only when none is taken; a
# claim this key holds already is made to last the ttl at least (never less: the ID's job may
# live longer), since the ID may be submitted again after its earlier job's record expired.
CLAIM = """
local out, taken = {}, false
for i = 5, #ARGV do
  local owner = redis.call('GET', ARGV[1] .. ARGV[i])
  if owner then
    out[#out + 1] = owner == ARGV[3] and 'mine' or 'taken'
  elseif redis.call('EXISTS', ARGV[2] .. ARGV[i]) == 1 then
    out[#out + 1] = 'taken'
  else
    out[#out + 1] = 'new'
  end
  if out[#out] == 'taken' then taken = true end
end
if not taken then
  for i = 5, #ARGV do
    if out[i - 4] == 'new' then
      redis.call('SET', ARGV[1] .. ARGV[i], ARGV[3], 'EX', ARGV[4])
    elseif redis.call('TTL', ARGV[1] .. ARGV[i]) < tonumber(ARGV[4]) then
      redis.call('EXPIRE', ARGV[1] .. ARGV[i], ARGV[4])
    end
  end
end
return out
"""

# ARGV: owner key prefix, key name, then job IDs: drops the claims this key holds on them.
RELEASE = """
for i = 3, #ARGV do
  if redis.call('GET', ARGV[1] .. ARGV[i]) == ARGV[2] then redis.call('DEL', ARGV[1] .. ARGV[i]) end
end
return 0
"""

# ARGV: owner key prefix, key name, ttl, then job IDs: records the owner of each (one command
# for a batch, where a SET each would cost a reply each to read). See also submitting.py.
RECORD = """
for i = 4, #ARGV do
  redis.call('SET', ARGV[1] .. ARGV[i], ARGV[2], 'EX', ARGV[3])
end
return #ARGV - 3
"""

_OWNER_PREFIX = keys.owner("")
_JOB_PREFIX = keys.job("")


def owner_ttl(job_ttl: int) -> int:
    """A job's record lives ``ttl`` from submission, and again ``ttl`` from its end at most."""
    return 2 * job_ttl


class Owners:
    """Claims, records and checks job ownership."""

    def __init__(self, sync: redis.Redis, aio: redis.asyncio.Redis) -> None:
        self._redis = sync
        self._aio = aio
        self._claim = aio.register_script(CLAIM)
        self._release = aio.register_script(RELEASE)
        self._record_sync = sync.register_script(RECORD)

    async def claim(self, name: str, job_ids: Sequence[str], job_ttl: int) -> list[str]:
        """Claim caller-chosen IDs before they are submitted; the ones newly claimed.

        JobIdTaken, and nothing claimed, when any of them belongs to someone else.
        """
        ttl = owner_ttl(job_ttl)
        out = await self._claim(args=[_OWNER_PREFIX, _JOB_PREFIX, name, ttl, *job_ids])
        taken = [j for j, o in zip(job_ids, out, strict=True) if o == "taken"]
        if taken:
            raise JobIdTaken(
                f"job ID {taken[0]!r} is already used by another caller: choose another ID",
                job_id=taken[0],
            )
        return [j for j, o in zip(job_ids, out, strict=True) if o == "new"]

    async def release(self, name: str, job_ids: Sequence[str]) -> None:
        """Drop claims on IDs whose submission failed."""
        if job_ids:
            await self._release(args=[_OWNER_PREFIX, name, *job_ids])

    def record_blocking(self, name: str, job_ids: Sequence[str], job_ttl: int) -> None:
        """Record the owner of jobs whose IDs were generated (nobody else can know them yet)."""
        self._record_sync(args=[_OWNER_PREFIX, name, owner_ttl(job_ttl), *job_ids])

    async def owner(self, job_id: str) -> str | None:
        """The name of the key that submitted ``job_id`` over HTTP, if one did."""
        found = await self._aio.get(keys.owner(job_id))
        return None if found is None else str(found)
