"""Job routes: submit one or many, read or long-poll one, cancel one."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from registry import (
    InvalidInput,
    JobNotCancellable,
    JobNotFound,
)

from ..contract import FINAL_STATUSES, JobResult
from .auth import Principal, require
from .limits import read_json
from .responses import OVERLOADED, errors
from .routes_models import ModelName
from .schemas import (
    BatchAccepted,
    BatchSubmission,
    JobAccepted,
    JobSubmission,
    JobsWait,
    JobsWaited,
)
from .services import Services, services
from .submitting import submit

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
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
) -> Response:
    """Enqueue one job; 202 with its ID at once. Invalid input: 422, and nothing is enqueued."""
    return await submit_one(svc, who, name, request)


async def submit_one(svc: Services, who: Principal, name: str, request: Request) -> Response:
    """POST /v1/models/{name}/jobs, once routed and authenticated (also fast.py's)."""
    payload = await read_json(request)
    _count_rows(payload, svc.settings.max_rows)
    body = _parse(JobSubmission, payload)
    [job_id] = await submit(svc, who, name, [body.rows], [body.job_id], body)
    url = _status_url(request, job_id)
    # Written here rather than through the response model: the fields are ours, already checked.
    return Response(
        orjson.dumps({"id": job_id, "status_url": url}), status_code=202,
        media_type="application/json", headers={"Location": url},
    )  # fmt: skip


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
) -> Response:
    """Enqueue many jobs for one model; if any job is invalid, none is enqueued (422)."""
    payload = await read_json(request)
    _count_rows(payload, svc.settings.max_rows, svc.settings.api_max_batch_jobs)
    body = _parse(BatchSubmission, payload)
    rows = [job.rows for job in body.jobs]
    ids = await submit(svc, who, name, rows, [job.job_id for job in body.jobs], body)
    return Response(
        orjson.dumps({"jobs": [{"id": i, "status_url": _status_url(request, i)} for i in ids]}),
        status_code=202, media_type="application/json",
    )  # fmt: skip


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
) -> Response:
    """The job's record. With ``wait``, the record once final, or as it is when the wait ends."""
    return await read_one(svc, who, job_id, wait)


async def read_one(svc: Services, who: Principal, job_id: str, wait: float) -> Response:
    """GET /v1/jobs/{job_id}, once routed and authenticated (also fast.py's)."""
    timeout = min(wait, svc.settings.api_max_wait)
    found = await svc.waiters.lookup([job_id], timeout, None if who.admin else who.name)
    record = found[job_id]
    if record is None:
        raise _not_found(job_id)
    return _json(record.model_dump_json().encode())


@router.post(
    "/jobs:wait",
    response_model=JobsWaited,
    responses=errors(400, 401, 403, 413, 415, 422, 503),
    openapi_extra=_body_doc(JobsWait),
    summary="Read many jobs, or long-poll until all have ended",
    operation_id="wait_jobs",
)
async def wait_jobs(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    who: Annotated[Principal, Depends(require("submit"))],
) -> Response:
    """The records of the jobs that are final, once all are or when ``wait`` ends, and the IDs
    of those that are not final, or not found (unknown, expired, or another API key's)."""
    return await wait_many(svc, who, request)


async def wait_many(svc: Services, who: Principal, request: Request) -> Response:
    """POST /v1/jobs:wait, once routed and authenticated (also fast.py's)."""
    payload = await read_json(request)
    ids = payload.get("ids") if isinstance(payload, dict) else None
    limit = svc.settings.api_max_batch_jobs
    if isinstance(ids, list) and len(ids) > limit:
        raise InvalidInput(
            f"{len(ids)} job IDs is more than {limit} per request "
            "(PREDICTQ_API_MAX_BATCH_JOBS): split them over several requests"
        )
    body = _parse(JobsWait, payload)
    unique = list(dict.fromkeys(body.ids))
    timeout = min(body.wait, svc.settings.api_max_wait)
    found = await svc.waiters.lookup(unique, timeout, None if who.admin else who.name)
    final, pending, missing = [], [], []
    for job_id in unique:
        record = found[job_id]
        if record is None:
            missing.append(job_id)
        elif record.status in FINAL_STATUSES:
            final.append(record.model_dump_json().encode())
        else:
            pending.append(job_id)
    return _json(
        b'{"jobs":[' + b",".join(final) + b'],"pending":' + orjson.dumps(pending)
        + b',"not_found":' + orjson.dumps(missing) + b"}"
    )  # fmt: skip


def _json(content: bytes) -> Response:
    # Records are written as they are (see the routes' response_model for their schema):
    # validating our own records again would cost more than reading them.
    return Response(content, media_type="application/json")


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
