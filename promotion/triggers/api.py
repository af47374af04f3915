"""HTTP API: the production-sharing workflow and the status view of a model version.

Handlers parse, call the service, and map its errors to status codes; the rules live in promotion.service.
As in the other trigger modules, the promotion package is imported at first invocation, not at indexing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import azure.functions as func

from promotion.triggers.jobs import JOBS_QUEUE, STORAGE, job_message

bp = func.Blueprint()
log = logging.getLogger("promotion")

_PROMOTION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_TEXT = 2000
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class BadRequest(ValueError):
    pass


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return _json(status, {"error": message, "status": status})


def json_api(handler: Callable[..., func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """Turn every expected failure into a JSON answer with the right status; never a traceback."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest, *args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return handler(req, *args, **kwargs)
        except Exception as error:
            return _answer_for(error)

    return wrapper


def _answer_for(error: Exception) -> func.HttpResponse:
    from promotion import service
    from promotion.domain import InvalidName, InvalidTransition
    from promotion.identity import Unauthenticated
    from promotion.policy import PolicyError
    from promotion.ports import PromotionNotFound
    from promotion.settings import SettingsError

    statuses: list[tuple[int, tuple[type[Exception], ...]]] = [
        (400, (BadRequest, InvalidName)),
        (401, (Unauthenticated,)),
        (403, (service.NotAllowed,)),
        (404, (PromotionNotFound, service.ModelNotInRegistry)),
        (409, (InvalidTransition, service.ConcurrentChange)),
    ]
    for status, kinds in statuses:
        if isinstance(error, kinds):
            return _error(status, str(error))
    if isinstance(error, (SettingsError, PolicyError)):
        log.error("the app is misconfigured: %s", error)
        return _error(500, f"the app is misconfigured: {error}")
    # Azure SDK errors carry the HTTP status of the service; pass throttling and outages on as 503.
    status_code = getattr(error, "status_code", None)
    if status_code in _TRANSIENT_STATUS:
        log.warning("Azure is unavailable: %s", error)
        return _error(503, f"Azure ML is unavailable right now ({status_code}); retry later")
    raise error


def _caller(req: func.HttpRequest) -> Any:
    from promotion.identity import principal_from_headers

    return principal_from_headers(dict(req.headers), os.environ)


def _body(req: func.HttpRequest, *, required: bool) -> dict[str, Any]:
    raw = req.get_body()
    if not raw.strip():
        if required:
            raise BadRequest("the request needs a JSON object body")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field}: {'required, ' if required else ''}expected a non-empty string")
    if len(value) > _MAX_TEXT:
        raise BadRequest(f"{field}: at most {_MAX_TEXT} characters")
    return value.strip()


def _promotion_id(req: func.HttpRequest) -> str:
    from promotion.ports import PromotionNotFound

    promotion_id = req.route_params.get("id", "")
    if not _PROMOTION_ID.fullmatch(promotion_id):
        raise PromotionNotFound(promotion_id)
    return promotion_id


@bp.function_name("request_promotion")
@bp.route(route="promotions", methods=["POST"])
@json_api
def request_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import ModelRef

    caller = _caller(req)
    body = _body(req, required=True)
    if "model_name" not in body:
        raise BadRequest("model_name: required")
    if "model_version" not in body:
        raise BadRequest("model_version: required")
    ref = ModelRef.parse(body["model_name"], body["model_version"])
    promotion, created = service.request_promotion(
        ref,
        reason=_text(body, "reason", required=False),
        caller=caller,
        registry=wiring.backend().registry,
        store=wiring.store(),
    )
    return _json(201 if created else 200, promotion.to_json())


@bp.function_name("list_promotions")
@bp.route(route="promotions", methods=["GET"])
@json_api
def list_promotions(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import wiring
    from promotion.domain import State

    state_name = req.params.get("state")
    try:
        state = State(state_name) if state_name else None
    except ValueError:
        raise BadRequest(f"state: {state_name!r} is not one of {', '.join(s.value for s in State)}") from None
    promotions = wiring.store().list(state=state)
    return _json(200, {"promotions": [promotion.to_json() for promotion in promotions]})


@bp.function_name("get_promotion")
@bp.route(route="promotions/{id}", methods=["GET"])
@json_api
def get_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import wiring

    return _json(200, wiring.store().get(_promotion_id(req)).to_json())


@bp.function_name("approve_promotion")
@bp.route(route="promotions/{id}/approve", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=JOBS_QUEUE, connection=STORAGE)
@json_api
def approve_promotion(req: func.HttpRequest, jobs: func.Out[str]) -> func.HttpResponse:
    from promotion import service, wiring

    caller = _caller(req)
    promotion_id = _promotion_id(req)
    comment = _text(_body(req, required=False), "comment", required=False)
    promotion = service.approve(
        promotion_id, caller=caller, comment=comment, rules=wiring.policy().production, store=wiring.store()
    )
    # Only the approval that won the optimistic-concurrency race reaches this line, so one job is queued.
    jobs.set(job_message(promotion.id))
    return _json(202, promotion.to_json())


@bp.function_name("reject_promotion")
@bp.route(route="promotions/{id}/reject", methods=["POST"])
@json_api
def reject_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring

    caller = _caller(req)
    promotion_id = _promotion_id(req)
    comment = _text(_body(req, required=True), "comment", required=True)
    assert comment is not None
    promotion = service.reject(
        promotion_id, caller=caller, comment=comment, rules=wiring.policy().production, store=wiring.store()
    )
    return _json(200, promotion.to_json())


@bp.function_name("model_status")
@bp.route(route="models/{name}/versions/{version}", methods=["GET"])
@json_api
def model_status(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import ModelRef

    ref = ModelRef.parse(req.route_params.get("name", ""), req.route_params.get("version", ""))
    backend = wiring.backend()
    status = service.model_status(
        ref, staging=backend.staging, registry=backend.registry, deployer=backend.production, store=wiring.store()
    )
    if not any(status[key] for key in ("staging", "registry", "production", "promotions", "decisions")):
        return _error(404, f"model {ref} is unknown: not in staging, the registry or production, and never promoted")
    return _json(200, status)
