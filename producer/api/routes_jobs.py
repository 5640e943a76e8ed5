"""Job routes: submit one or many, read or long-poll one, cancel one."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import redis
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from registry import (
    DEFAULT_ALIAS,
    InvalidInput,
    JobNotCancellable,
    JobNotFound,
    NotReplicated,
    RedisUnavailable,
)

from ..admission import is_oom, out_of_memory
from ..contract import JobResult
from .auth import Principal, require
from .limits import read_json
from .responses import OVERLOADED, errors
from .routes_models import ModelName
from .schemas import (
    BatchAccepted,
    BatchSubmission,
    JobAccepted,
    JobSubmission,
)
from .services import Services, services

router = APIRouter(prefix="/v1", tags=["jobs"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=200, description="The job's ID.")]
_SUBMIT_ERRORS = {**errors(400, 401, 403, 404, 409, 413, 415, 422), 503: OVERLOADED}
# OpenAPI links say where a submitted job's ID goes next (clients and test generators follow them).
_ACCEPTED = {
    "headers": {"Location": {"description": "The status URL.", "schema": {"type": "string"}}},
    "links": {
        "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/id"}},
        "CancelJob": {"operationId": "cancel_job", "parameters": {"job_id": "$response.body#/id"}},
    },
}


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body this module parses itself (strictly, see limits.read_json)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        errors_ = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
        raise RequestValidationError(errors_) from e


def _count_rows(payload: Any, max_rows: int, max_jobs: int | None = None) -> None:
    """Refuse too many rows or jobs before validating any of them (a body may hold millions)."""
    if not isinstance(payload, dict):
        return
    jobs = payload.get("jobs") if max_jobs is not None else [payload]
    if not isinstance(jobs, list):
        return
    if max_jobs is not None and len(jobs) > max_jobs:
        raise InvalidInput(
            f"{len(jobs)} jobs is more than {max_jobs} per batch "
            "(PREDICTQ_API_MAX_BATCH_JOBS): split them over several requests"
        )
    for i, job in enumerate(jobs):
        rows = job.get("rows") if isinstance(job, dict) else None
        if isinstance(rows, list) and len(rows) > max_rows:
            prefix = f"job {i}: " if max_jobs is not None else ""
            raise InvalidInput(
                f"{prefix}{len(rows)} rows is more than the limit of {max_rows} per job "
                "(PREDICTQ_MAX_ROWS): split the input into several jobs"
            )


def _status_url(request: Request, job_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/v1/jobs/{quote(job_id, safe='')}"


def _submit(
    svc: Services,
    who: Principal,
    model: str,
    jobs: list[Any],
    job_ids: list[str | None],
    target: JobSubmission | BatchSubmission,
) -> list[str]:
    """Claim caller-chosen IDs, submit through the client, then record who owns the jobs."""
    chosen = [j for j in job_ids if j is not None]
    if chosen and len(chosen) != len(job_ids):
        raise InvalidInput("give every job of a batch a job_id, or none of them")
    if len(set(chosen)) != len(chosen):
        raise InvalidInput("job IDs repeat within the batch: give each job its own")
    ttl = target.ttl or svc.settings.result_ttl
    claimed = svc.owners.claim(who.name, chosen, ttl) if chosen else []
    try:
        ids = svc.client.submit_many(
            model, jobs, version=target.version, alias=target.alias or DEFAULT_ALIAS,
            job_ids=chosen or None, probabilities=target.probabilities, ttl=target.ttl,
        )  # fmt: skip
    except NotReplicated as e:
        # The jobs were enqueued. Chosen IDs stay owned, so that resubmitting them (safe: an ID
        # that exists is not enqueued twice) or reading them works; generated ones the caller
        # never learns, so they are taken back rather than left to run unseen.
        if chosen:
            raise
        said = e.message.partition(": it may")[0]
        try:
            svc.client.cancel_many(e.job_ids[: e.enqueued])
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
    except BaseException:
        svc.owners.release(who.name, claimed)
        raise
    if not chosen:
        try:
            svc.owners.record(who.name, ids, ttl)
        except redis.ResponseError as e:
            if not is_oom(e):
                raise
            # Redis filled up between the jobs and their owner: the submission is taken back.
            svc.client.cancel_many(ids)
            raise out_of_memory(len(ids)) from e
    return ids


@router.post(
    "/models/{name}/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={**_SUBMIT_ERRORS, 202: _ACCEPTED},
    openapi_extra=_body_doc(JobSubmission),
    summary="Submit one job",
    operation_id="submit_job",
)
async def submit_job(
    name: ModelName,
    request: Request,
    response: Response,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
) -> JobAccepted:
    """Enqueue one job; 202 with its ID at once. Invalid input: 422, and nothing is enqueued."""
    payload = await read_json(request)
    _count_rows(payload, svc.settings.max_rows)
    body = _parse(JobSubmission, payload)
    [job_id] = await run_in_threadpool(_submit, svc, who, name, [body.rows], [body.job_id], body)
    url = _status_url(request, job_id)
    response.headers["Location"] = url
    return JobAccepted(id=job_id, status_url=url)


@router.post(
    "/models/{name}/jobs:batch",
    status_code=202,
    response_model=BatchAccepted,
    responses=_SUBMIT_ERRORS,
    openapi_extra=_body_doc(BatchSubmission),
    summary="Submit many jobs",
    operation_id="submit_batch",
)
async def submit_batch(
    name: ModelName,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
) -> BatchAccepted:
    """Enqueue many jobs for one model; if any job is invalid, none is enqueued (422)."""
    payload = await read_json(request)
    _count_rows(payload, svc.settings.max_rows, svc.settings.api_max_batch_jobs)
    body = _parse(BatchSubmission, payload)
    rows = [job.rows for job in body.jobs]
    ids = await run_in_threadpool(
        _submit, svc, who, name, rows, [job.job_id for job in body.jobs], body
    )
    return BatchAccepted(jobs=[JobAccepted(id=i, status_url=_status_url(request, i)) for i in ids])


async def _visible(svc: Services, who: Principal, job_id: str) -> None:
    """JobNotFound unless ``who`` may see the job: its own, or any job for an admin key."""
    if who.admin:
        return
    if await svc.owners.owner(job_id) != who.name:
        # The same answer as for an unknown ID: another key's job IDs are not disclosed.
        raise _not_found(job_id)


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(
        f"no job {job_id!r}: it was never submitted with this API key, or its record expired "
        "after its TTL",
        job_id=job_id,
    )


async def _read(svc: Services, job_id: str) -> JobResult:
    try:
        return await run_in_threadpool(svc.client.result, job_id)
    except JobNotFound as e:
        raise _not_found(job_id) from e


@router.get(
    "/jobs/{job_id}",
    response_model=JobResult,
    responses=errors(401, 403, 404, 422, 503),
    summary="Read a job, or long-poll until it ends",
    operation_id="get_job",
)
async def get_job(
    job_id: JobIdPath,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
    wait: Annotated[
        float,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait for the job to end (capped by "
            "PREDICTQ_API_MAX_WAIT); it answers as soon as the job is final.",
        ),
    ] = 0,
) -> JobResult:
    """The job's record. With ``wait``, the record once final, or as it is when the wait ends."""
    await _visible(svc, who, job_id)
    if wait > 0:
        await svc.waiters.wait(job_id, min(wait, svc.settings.api_max_wait))
    return await _read(svc, job_id)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobResult,
    responses=errors(401, 403, 404, 409, 422, 503),
    summary="Cancel a queued job",
    operation_id="cancel_job",
)
async def cancel_job(
    job_id: JobIdPath,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
) -> JobResult:
    """Cancel a job that has not started: its record, now cancelled; 409 once it has started."""
    await _visible(svc, who, job_id)
    try:
        cancelled = await run_in_threadpool(svc.client.cancel, job_id)
    except JobNotFound as e:
        raise _not_found(job_id) from e
    found = await _read(svc, job_id)
    if not cancelled:
        raise JobNotCancellable(
            f"job {job_id!r} is {found.status}: only a queued job can be cancelled",
            job_id=job_id,
        )
    return found
