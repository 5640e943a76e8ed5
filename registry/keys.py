"""Every Redis key predictq writes, built in one place so the data model reads in one screen.

- ``predictq:models``                         set of model names
- ``predictq:model:{name}:seq``               counter that allocates version numbers
- ``predictq:model:{name}:versions``          hash version -> ModelVersion JSON
- ``predictq:model:{name}:aliases``           hash alias -> version
- ``predictq:model:{name}:stack:{alias}``     list of earlier versions, for rollback (bounded)
- ``predictq:model:{name}:history``           list of promotion events JSON (bounded)
- ``predictq:events``                         pub/sub channel for promotions
- ``predictq:job:{id}``                       hash: the job record (expires with its TTL)
- ``predictq:done:{id}``                      list a waiter blocks on; pushed when the job ends
- ``predictq:worker:{name}``                  worker heartbeat JSON (expires)
- ``predictq:load_failures``                  hash "{model}:{version}:{worker}" -> error JSON
- ``predictq:stats:{minute}``                 hash status -> count for that minute (expires)
"""

from __future__ import annotations

PREFIX = "predictq"
MODELS = f"{PREFIX}:models"
EVENTS = f"{PREFIX}:events"
LOAD_FAILURES = f"{PREFIX}:load_failures"
WORKER_PATTERN = f"{PREFIX}:worker:*"

# Bounds for lists that would otherwise grow with every promotion.
HISTORY_LIMIT = 1000
STACK_LIMIT = 100
# How long a finished job's wake-up token waits for a waiter that has not arrived yet.
DONE_TOKEN_TTL = 60
STATS_TTL = 2 * 3600


def model_seq(name: str) -> str:
    return f"{PREFIX}:model:{name}:seq"


def model_versions(name: str) -> str:
    return f"{PREFIX}:model:{name}:versions"


def model_aliases(name: str) -> str:
    return f"{PREFIX}:model:{name}:aliases"


def model_stack(name: str, alias: str) -> str:
    return f"{PREFIX}:model:{name}:stack:{alias}"


def model_history(name: str) -> str:
    return f"{PREFIX}:model:{name}:history"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def done(job_id: str) -> str:
    return f"{PREFIX}:done:{job_id}"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def stats(minute: int) -> str:
    return f"{PREFIX}:stats:{minute}"
