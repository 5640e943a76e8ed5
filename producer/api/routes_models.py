"""Registry routes: read models and versions (``read``); promote, roll back, archive and delete
(``admin``), recorded in the history under the API key's name."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from registry import DEFAULT_ALIAS, ModelVersion, Registry

from .auth import Principal, require
from .responses import errors
from .schemas import NAME_PATTERN, AliasMoved, ModelDetail, ModelList, ModelSummary
from .services import Services, services

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["churn"])]
Version = Annotated[int, Path(ge=1, description="A version number (they count up from 1).")]
Alias = Annotated[
    str, Query(pattern=NAME_PATTERN, description="The alias to move (default 'production').")
]
Svc = Annotated[Services, Depends(services)]
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _list(registry: Registry) -> ModelList:
    names = registry.models()
    return ModelList(models=[ModelSummary(name=n, aliases=registry.aliases(n)) for n in names])


def _detail(registry: Registry, name: str) -> ModelDetail:
    versions = registry.versions(name)
    return ModelDetail(name=name, aliases=registry.aliases(name), versions=versions,
                       history=registry.history(name))  # fmt: skip


@router.get(
    "",
    response_model=ModelList,
    responses=errors(401, 403, 503),
    summary="List models",
    operation_id="list_models",
)
async def list_models(svc: Svc, _: Reader) -> ModelList:
    """Every registered model and where its aliases point."""
    return await run_in_threadpool(_list, svc.registry)


@router.get(
    "/{name}",
    response_model=ModelDetail,
    responses=errors(401, 403, 404, 422, 503),
    summary="Show a model",
    operation_id="show_model",
)
async def show_model(name: ModelName, svc: Svc, _: Reader) -> ModelDetail:
    """A model's versions (oldest first), aliases and promotion history."""
    return await run_in_threadpool(_detail, svc.registry, name)


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersion,
    responses=errors(401, 403, 404, 422, 503),
    summary="Show a version",
    operation_id="show_version",
)
async def show_version(name: ModelName, version: Version, svc: Svc, _: Reader) -> ModelVersion:
    """One version's metadata: signature, environment, checksum, metrics and tags."""
    return await run_in_threadpool(svc.registry.get, name, version)


@router.post(
    "/{name}/versions/{version}/promote",
    response_model=AliasMoved,
    responses=errors(401, 403, 404, 409, 422, 503),
    summary="Promote a version",
    operation_id="promote",
)
async def promote(
    name: ModelName,
    version: Version,
    svc: Svc,
    who: Admin,
    alias: Alias = DEFAULT_ALIAS,
    force: Annotated[
        bool,
        Query(description="Promote even when the version's input schema is incompatible with "
              "the one the alias serves now."),
    ] = False,
) -> AliasMoved:  # fmt: skip
    """Point the alias at this version; workers pick it up without a restart.

    409 when the version is archived, and (code ``incompatible_schema``) when its input schema
    is incompatible with the version the alias serves, unless ``force`` is true.
    """
    meta = await run_in_threadpool(
        functools.partial(svc.registry.promote, name, version, alias, actor=who.name, force=force)
    )
    return AliasMoved(model=name, alias=alias, version=meta.version)


@router.post(
    "/{name}/versions/{version}/archive",
    response_model=ModelVersion,
    responses=errors(401, 403, 404, 409, 422, 503),
    summary="Archive a version",
    operation_id="archive",
)
async def archive(name: ModelName, version: Version, svc: Svc, who: Admin) -> ModelVersion:
    """Keep the version for audit but serve it no more; 409 while an alias points at it."""
    return await run_in_threadpool(svc.registry.archive, name, version, actor=who.name)


@router.post(
    "/{name}/versions/{version}/unarchive",
    response_model=ModelVersion,
    responses=errors(401, 403, 404, 422, 503),
    summary="Unarchive a version",
    operation_id="unarchive",
)
async def unarchive(name: ModelName, version: Version, svc: Svc, who: Admin) -> ModelVersion:
    """Make an archived version promotable and servable again."""
    return await run_in_threadpool(svc.registry.unarchive, name, version, actor=who.name)


@router.delete(
    "/{name}/versions/{version}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 403, 404, 409, 422, 503),
    summary="Delete a version",
    operation_id="delete_version",
)
async def delete_version(name: ModelName, version: Version, svc: Svc, who: Admin) -> Response:
    """Delete the version, and its artifact unless another version has the same bytes.

    409 while an alias points at it. Its number is never given out again.
    """
    await run_in_threadpool(svc.registry.delete, name, version, actor=who.name)
    return Response(status_code=204)


@router.post(
    "/{name}/rollback",
    response_model=AliasMoved,
    responses=errors(401, 403, 404, 409, 422, 503),
    summary="Roll an alias back",
    operation_id="rollback",
)
async def rollback(
    name: ModelName, svc: Svc, who: Admin, alias: Alias = DEFAULT_ALIAS
) -> AliasMoved:
    """Point the alias back at the version it had before its last promotion."""
    meta = await run_in_threadpool(svc.registry.rollback, name, alias, actor=who.name)
    return AliasMoved(model=name, alias=alias, version=meta.version)
