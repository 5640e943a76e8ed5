"""Celery results: a job's end written where Celery's Redis result backend reads it.

A job sent by a stock Celery client (Python's ``send_task``, Node's ``celery-node``) waits on
``AsyncResult.get()``, which reads ``celery-task-meta-{id}`` and listens on the channel of the
same name. Whether a job gets one is decided once, when its record is created, by its ``celery``
field: START sets it for a message that has no record yet (a stock client's), SUBMIT when the
producer's ``PREDICTQ_CELERY_RESULTS`` is on, and START too for every job when the worker's is.
Every script that writes a final record then writes the Celery result in the same call. FINISH
comes in two forms (worker/ledger.py): a batch consumer sends FINISH_CELERY, which reads the
flag, only for a batch whose messages say it may hold such a job, so other batches pay nothing;
Celery's own task path (``PREDICTQ_BATCHING=false``) always sends it, for one more field read.

What is written is what ``celery/backends/base.py`` (``_store_result``, ``encode`` with the JSON
serializer) and ``celery/backends/redis.py`` (``_set``: SETEX, then PUBLISH of the same value on
the key's own channel) write:

- succeeded: status ``SUCCESS``, result the job's record as JSON (the ``JobResult`` fields, the
  same JSON as the HTTP API's);
- failed: status ``FAILURE``, result ``{"exc_type": "RuntimeError", "exc_module": "builtins",
  "exc_message": ["<code>: <message>"], "code": ..., "message": ...}``: Python Celery's
  ``exception_to_python`` rebuilds ``RuntimeError("<code>: <message>")`` (a builtin, so its
  module check passes on any client), and celery-node rejects with an ``Error`` that takes the
  dict's fields (its ``message`` and ``code`` become the error's own);
- cancelled: status ``REVOKED`` with ``celery.exceptions.TaskRevokedError``, which Python raises
  and celery-node rejects like a failure.

It expires with the job's record. Writing it never fails the script that ends the job: it runs
under ``pcall``, since a key of that name (made by hand, of any type) or a record field that is
not what we wrote must not stop a final record from being written.
"""

from __future__ import annotations

from registry import keys

__all__ = ["FLAG", "LUA"]

FLAG = "celery"
"""The record field that says a Celery result is written when the job ends."""


# celery_iso(): epoch seconds as written in records ('1795737600.123456'), as ISO 8601 in UTC
# ending in ``zone``: Celery's date_done is datetime.isoformat() ('+00:00'), a record's times are
# what pydantic writes ('Z'). Days to a civil date by H. Hinnant's algorithm: Redis's Lua has no
# os.date. celery_store(): the SETEX and PUBLISH of Celery's RedisBackend._set.
# celery_result(): the result of the record at ``key``, just made final, at ``now``, kept ``ttl``
# seconds. celery_gone(): the result of a job that has no record left (it expired while queued).
LUA = f"""
local celery_isos = {{}}
local function celery_iso(t, zone)
  -- A batch's jobs share their start and end times (and often their submission): each is
  -- worked out once per call.
  local memo = celery_isos[t .. zone]
  if memo then return memo end
  local s, f = string.match(t, '^(%d+)%.?(%d*)')
  s = tonumber(s)
  local days = math.floor(s / 86400)
  local secs = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  memo = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%s', y, m, d, math.floor(secs / 3600),
    math.floor(secs % 3600 / 60), secs % 60, string.sub(f .. '000000', 1, 6)) .. zone
  celery_isos[t .. zone] = memo
  return memo
end
local function celery_store(id, state, result, now, ttl)
  local meta = '{{"status": "' .. state .. '", "result": ' .. result
    .. ', "traceback": null, "children": [], "date_done": "' .. celery_iso(now, '+00:00')
    .. '", "task_id": ' .. cjson.encode(id) .. '}}'
  local k = '{keys.CELERY_META_PREFIX}' .. id
  redis.call('SET', k, meta, 'EX', math.max(1, math.floor(tonumber(ttl) or 86400)))
  redis.call('PUBLISH', k, meta)
end
local function celery_error(code, message, revoked)
  local text = cjson.encode(code .. ': ' .. message)
  local exc = revoked and '"TaskRevokedError", "exc_module": "celery.exceptions"'
    or '"RuntimeError", "exc_module": "builtins"'
  return '{{"exc_type": ' .. exc .. ', "exc_message": [' .. text .. '], "code": '
    .. cjson.encode(code) .. ', "message": ' .. text .. '}}'
end
local function celery_write(key, id, now, ttl)
  local r = redis.call('HMGET', key, 'status', 'model', 'alias', 'version', 'predictions',
    'proba', 'classes', 'error', 'submitted_at', 'started_at', 'finished_at', 'attempts',
    'worker')
  if r[1] == 'failed' then
    -- A record's error is our own JSON; anything else still ends the wait, as a failure.
    local ok, e = pcall(cjson.decode, r[8] or '')
    if not ok or type(e) ~= 'table' then e = {{}} end
    local code = type(e['code']) == 'string' and e['code'] or 'failed'
    local message = type(e['message']) == 'string' and e['message'] or 'the job failed'
    celery_store(id, 'FAILURE', celery_error(code, message, false), now, ttl)
    return
  elseif r[1] == 'cancelled' then
    local e = celery_error('cancelled', 'the job was cancelled before it ran', true)
    celery_store(id, 'REVOKED', e, now, ttl)
    return
  end
  local function text(v) return (v and v ~= '') and cjson.encode(v) or 'null' end
  local function raw(v) return (v and v ~= '') and v or 'null' end
  local function int(v)
    return (v and v ~= '' and tonumber(v)) and string.format('%d', tonumber(v)) or 'null'
  end
  local function at(v) return (v and v ~= '') and ('"' .. celery_iso(v, 'Z') .. '"') or 'null' end
  local record = '{{"id": ' .. cjson.encode(id) .. ', "status": ' .. text(r[1])
    .. ', "model": ' .. cjson.encode(r[2] or '') .. ', "alias": ' .. text(r[3])
    .. ', "version": ' .. int(r[4]) .. ', "predictions": ' .. raw(r[5])
    .. ', "probabilities": ' .. raw(r[6]) .. ', "classes": ' .. raw(r[7])
    .. ', "error": ' .. raw(r[8]) .. ', "submitted_at": ' .. at(r[9])
    .. ', "started_at": ' .. at(r[10]) .. ', "finished_at": ' .. at(r[11])
    .. ', "attempts": ' .. (r[12] and r[12] ~= '' and int(r[12]) or '0')
    .. ', "worker": ' .. text(r[13]) .. '}}'
  celery_store(id, 'SUCCESS', record, now, ttl)
end
local function celery_result(key, id, now, ttl)
  local ok, err = pcall(celery_write, key, id, now, ttl)
  if not ok then
    redis.log(redis.LOG_WARNING, 'predictq: no Celery result for job ' .. id .. ': '
      .. tostring(type(err) == 'table' and err['err'] or err))
  end
end
local function celery_gone(id, now, ttl)
  pcall(celery_store, id, 'FAILURE', celery_error('expired', 'the job record expired before a '
    .. 'worker took the job: raise PREDICTQ_RESULT_TTL or the ttl of the job', false), now, ttl)
end
"""
