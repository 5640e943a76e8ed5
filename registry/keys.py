"""Every Redis key predictq writes, built in one place so the data model reads in one screen.

- ``predictq:models``                         set of model names
- ``predictq:model:{name}:seq``               counter that allocates version numbers
- ``predictq:model:{name}:versions``          hash version -> ModelVersion JSON
- ``predictq:model:{name}:aliases``           hash alias -> version
- ``predictq:model:{name}:stack:{alias}``     list of earlier versions, for rollback (bounded)
- ``predictq:model:{name}:history``           list of promotion events JSON (bounded)
- ``predictq:mlflow:{name}:{mlflow_name}:{version}``
                                              marker of a follower importing that MLflow version
                                              into model {name} (expires; `models follow`)
- ``predictq:events``                         pub/sub channel for promotions, and for versions
                                              archived, unarchived or deleted
- ``predictq:job:{id}``                       hash: the job record (expires with its TTL)
- ``predictq:owner:{id}``                     name of the API key that submitted the job over HTTP
                                              (expires after twice the job's TTL)
- ``predictq:done:{id}``                      pub/sub channel published to when the job ends
- ``predictq:reply:{client}``                 results (or IDs) of jobs a client submitted in bulk
- ``predictq:result:{id}``                    wake-up list of a job submitted alone (expires soon)
- ``predictq:inflight``                       zset job id -> deadline, for jobs that Celery's own
                                              consumer runs (``PREDICTQ_BATCHING=false``)
- ``predictq:claiming:{worker}``              a worker process's claim list: the messages of the
                                              batch it holds, until their results are written
- ``predictq:leases``                         zset worker process -> deadline (Redis time) of the
                                              lease on its claim list, renewed while it works
- ``predictq:busy:{worker}``                  the token of the batch a worker process holds;
                                              ``timeout`` or ``taken`` once it was stopped or
                                              its claim list taken over
- ``predictq:recovering:{worker}:{token}``    a claim list one sweeper took over, until recovered
- ``predictq:recovering``                     zset of those lists -> deadline to finish recovering
- ``predictq:tries:{id}``                     deliveries of a job that has no record yet (expires)
- ``predictq:consumers``                      hash worker process -> its batch consumer's state JSON
- ``predictq:running``                        hash worker process -> jobs of the batch it holds
                                              (START adds, FINISH and takeovers clear)
- ``predictq:dead``                           dead letters: JSON entries (bounded)
- ``predictq:queued:{queue}``                 zset job id -> when it was (re)queued (Redis time),
                                              until it starts
- ``{queue}.isolate``                         jobs recovered from a crashed batch, run one at a time
- ``predictq:worker:{name}``                  worker heartbeat JSON (expires)
- ``predictq:nodes``                          zset node name -> time of its last heartbeat, so
                                              that readers find the nodes without a SCAN
- ``predictq:load_failures``                  hash "{model}:{version}:{worker}" -> error JSON
- ``predictq:stats:{minute}``                 hash status -> count for that minute, and
                                              "{status}:{model}" -> count per model (expires)
- ``celery-task-meta-{id}``                   Celery's result of a job that asked for one (a
                                              stock client's), where Celery's Redis result
                                              backend reads it (expires with the job's record)
"""

from __future__ import annotations

PREFIX = "predictq"
MODELS = f"{PREFIX}:models"
EVENTS = f"{PREFIX}:events"
LOAD_FAILURES = f"{PREFIX}:load_failures"
INFLIGHT = f"{PREFIX}:inflight"
DEAD = f"{PREFIX}:dead"
LEASES = f"{PREFIX}:leases"
RECOVERING = f"{PREFIX}:recovering"
CONSUMERS = f"{PREFIX}:consumers"
RUNNING = f"{PREFIX}:running"
NODES = f"{PREFIX}:nodes"
DEAD_LIMIT = 10_000
WORKER_PATTERN = f"{PREFIX}:worker:*"

# Bounds for lists that would otherwise grow with every promotion.
HISTORY_LIMIT = 1000
STACK_LIMIT = 100
# How long a client's reply list lives after its last push. Its entries are results (a few
# hundred bytes each), and it keeps REPLY_LIMIT at most: a client that never waits would otherwise
# grow it without bound; a waiter that falls that far behind reads the rest from the records.
REPLY_TTL = 3600
# A job submitted alone announces its end on its own list, which lives this long after the push:
# long enough for a waiter that is already blocked, short enough that fire-and-forget jobs leave
# little behind. Clients trust it only for jobs they submitted less than RESULT_TRUST ago.
RESULT_TTL = 120
RESULT_TRUST = 60.0
REPLY_LIMIT = 200_000
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


def mlflow_import(name: str, mlflow_name: str, version: str) -> str:
    return f"{PREFIX}:mlflow:{name}:{mlflow_name}:{version}"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def owner(job_id: str) -> str:
    return f"{PREFIX}:owner:{job_id}"


def done(job_id: str) -> str:
    return f"{PREFIX}:done:{job_id}"


def reply(client: str) -> str:
    return f"{PREFIX}:reply:{client}"


def result(job_id: str) -> str:
    return f"{PREFIX}:result:{job_id}"


def claiming(worker: str) -> str:
    return f"{PREFIX}:claiming:{worker}"


def busy(worker: str) -> str:
    return f"{PREFIX}:busy:{worker}"


def queued(queue: str) -> str:
    return f"{PREFIX}:queued:{queue}"


def recovering(worker: str, token: str) -> str:
    return f"{PREFIX}:recovering:{worker}:{token}"


def tries(job_id: str) -> str:
    return f"{PREFIX}:tries:{job_id}"


def isolate(queue: str) -> str:
    return f"{queue}.isolate"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def stats(minute: int) -> str:
    return f"{PREFIX}:stats:{minute}"


# Celery's Redis result backend's own prefix (RedisBackend.task_keyprefix), not predictq's.
CELERY_META_PREFIX = "celery-task-meta-"


def celery_meta(job_id: str) -> str:
    return f"{CELERY_META_PREFIX}{job_id}"
