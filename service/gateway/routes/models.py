"""``/v1/models``: upload a model, follow its validation, list and delete models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from fpf_client.errors import ErrorCode
from service.gateway.deps import ArtifactsDep, DispatcherDep, ModelDep, PrincipalDep, QuotasDep, StoreDep, get_principal
from service.gateway.operations import remove_model, store_model
from service.gateway.problems import problem_responses
from service.gateway.schemas import ModelOut, UploadHints
from service.gateway.scoping import visible_models

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    dependencies=[Depends(get_principal)],
    responses=problem_responses(ErrorCode.UNAUTHENTICATED),
)


@router.post(
    "",
    status_code=202,
    response_model=ModelOut,
    responses={
        200: {"model": ModelOut, "description": "The same bytes were uploaded before by this tenant"},
        **problem_responses(ErrorCode.INVALID_REQUEST, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.QUOTA_EXCEEDED),
    },
)
def upload_model(
    response: Response,
    store: StoreDep,
    artifacts: ArtifactsDep,
    dispatcher: DispatcherDep,
    principal: PrincipalDep,
    quotas: QuotasDep,
    file: Annotated[UploadFile, File(description="The model file")],
    hints: Annotated[UploadHints, Form()],
) -> ModelOut:
    """Store a model by the sha256 of its bytes and have a worker validate it.

    A new upload answers 202 (status ``validating``); the same bytes again from the same
    tenant answer 200 with its existing model, except that an ``invalid`` one is validated again with
    the new hints and names.
    """
    model, queued = store_model(
        store,
        artifacts,
        dispatcher,
        file.file,
        filename=file.filename,
        hints=hints.record_fields(),
        principal=principal,
        quotas=quotas,
    )
    if not queued:
        response.status_code = 200
    return ModelOut.of(model)


@router.get("", response_model=list[ModelOut])
def list_models(store: StoreDep, principal: PrincipalDep) -> list[ModelOut]:
    """The caller's models (everyone's for an admin), newest first."""
    return [ModelOut.of(m) for m in visible_models(store, principal)]


@router.get("/{model_id}", response_model=ModelOut, responses=problem_responses(ErrorCode.MODEL_NOT_FOUND))
async def get_model(model: ModelDep) -> ModelOut:
    return ModelOut.of(model)


@router.delete("/{model_id}", status_code=204, responses=problem_responses(ErrorCode.MODEL_NOT_FOUND))
def delete_model(model: ModelDep, store: StoreDep, artifacts: ArtifactsDep) -> Response:
    """Remove a model and its file; jobs already queued with it will fail."""
    remove_model(model, store, artifacts)
    return Response(status_code=204)
