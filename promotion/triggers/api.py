"""HTTP API: the production-sharing workflow and the status view of a model version.

Handlers parse, call the service, and map its errors to status codes; the rules live in promotion.service.
Fail-closed: every route needs an identity (reads included), bodies are bounded in size, depth and content, and
no answer or log line ever shows a setting's value. As in the other trigger modules, the promotion package is
imported at first invocation, not at indexing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import azure.functions as func

from promotion.triggers.context import publish_soon
from promotion.triggers.jobs import JOBS_QUEUE, STORAGE, job_message

bp = func.Blueprint()
log = logging.getLogger("promotion")

PROMOTION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 8  # the API's bodies are flat objects; anything deeper is not one of them
MAX_TEXT = 2000
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_ALLOWED_CONTROLS = {"\n", "\t"}


class BadRequest(ValueError):
    pass


class TooLarge(ValueError):
    pass


def _json(status: int, body: Any) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return _json(status, {"error": message, "status": status})


def json_api(handler: Callable[..., func.HttpResponse]) -> Callable[..., func.HttpResponse]:
    """Turn every failure into a JSON answer with the right status; never a traceback."""

    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest, *args: Any, **kwargs: Any) -> func.HttpResponse:
        try:
            return handler(req, *args, **kwargs)
        except Exception as error:
            return answer_for(error)

    return wrapper


def answer_for(error: Exception) -> func.HttpResponse:
    from promotion import service
    from promotion.domain import InvalidName, InvalidTransition
    from promotion.identity import CrossSiteRequest, Unauthenticated
    from promotion.policy import PolicyError
    from promotion.ports import InvalidContinuation, PromotionNotFound, StoreUnavailable
    from promotion.settings import SettingsError

    statuses: list[tuple[int, tuple[type[Exception], ...]]] = [
        (400, (BadRequest, InvalidName, service.NotDeployable, InvalidContinuation)),
        (401, (Unauthenticated,)),
        (403, (service.NotAllowed, CrossSiteRequest)),
        (404, (PromotionNotFound, service.ModelNotInRegistry)),
        (409, (InvalidTransition, service.ConcurrentChange, service.Conflict, service.Voided)),
        (413, (TooLarge,)),
    ]
    for status, kinds in statuses:
        if isinstance(error, kinds):
            return _error(status, str(error))
    if isinstance(error, SettingsError):
        log.error("the app is misconfigured: %s", error)
        return _error(500, f"the app is misconfigured: {error}")
    if isinstance(error, PolicyError):
        log.error("the promotion policy is invalid: %s", error.detail)
        return _error(500, f"the app is misconfigured: the promotion policy (PROMOTION_POLICY_FILE) {error.detail}")
    if isinstance(error, StoreUnavailable):
        log.warning("the promotion store is unavailable: %s", error)
        return _error(503, "the promotion store is unavailable right now; retry later")
    if _is_transient_azure_error(error):
        log.warning("Azure is unavailable: %s", type(error).__name__)
        return _error(503, "Azure ML is unavailable right now; retry later")
    log.exception("unexpected error")
    return _error(500, "an unexpected error occurred; the function logs have the details")


def _is_transient_azure_error(error: Exception) -> bool:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return True  # connection failures and timeouts
    return getattr(error, "status_code", None) in _TRANSIENT_STATUS and type(error).__module__.startswith("azure.")


def _caller(req: func.HttpRequest) -> Any:
    from promotion.identity import principal_from_headers

    return principal_from_headers(dict(req.headers), os.environ)


def _changing_caller(req: func.HttpRequest) -> Any:
    """The caller of a state-changing route, once the request is known not to come from another site."""
    from promotion.identity import check_same_origin

    caller = _caller(req)
    check_same_origin(dict(req.headers), os.environ)
    return caller


def _body(req: func.HttpRequest, *, required: bool) -> dict[str, Any]:
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw.strip():
        if required:
            raise BadRequest("the request needs a JSON object body")
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    if _depth(text) > MAX_DEPTH:
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    _check_unicode(body, "body")
    return body


def _depth(text: str) -> int:
    """How deeply arrays and objects nest, counted before parsing: the parser itself would recurse that deep."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_unicode(value: Any, where: str) -> None:
    """Lone surrogates (`"\\ud800"`) parse as JSON but are not text: nothing could store or compare them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{where}: not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, where)
            _check_unicode(item, f"{where}.{key}" if where != "body" else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_unicode(item, f"{where}[{index}]")


def _text(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    from promotion.identity import visible_text

    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not visible_text(value):
        raise BadRequest(f"{field}: {'required, ' if required else ''}expected text with visible characters")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{field}: at most {MAX_TEXT} characters")
    if any(unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS for ch in value):
        raise BadRequest(f"{field}: control characters are not allowed (only new lines and tabs)")
    return value.strip()


def _promotion_id(req: func.HttpRequest) -> str:
    from promotion.ports import PromotionNotFound

    promotion_id = req.route_params.get("id", "")
    if not PROMOTION_ID.fullmatch(promotion_id):
        raise PromotionNotFound(promotion_id.encode("ascii", "backslashreplace").decode()[:80])
    return promotion_id


def _workflow() -> dict[str, Any]:
    """The ports of the approval use cases."""
    from promotion import wiring

    return {
        "rules": wiring.policy().production,
        "store": wiring.store(),
        "source": wiring.settings().events_source,
        "clock": wiring.clock(),
    }


@bp.function_name("request_promotion")
@bp.route(route="promotions", methods=["POST"])
@json_api
def request_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import ModelRef

    caller = _changing_caller(req)
    body = _body(req, required=True)
    for field in ("model_name", "model_version"):
        if field not in body:
            raise BadRequest(f"{field}: required")
    ref = ModelRef.parse(body["model_name"], body["model_version"])
    promotion, created = service.request_promotion(
        ref,
        reason=_text(body, "reason", required=False),
        caller=caller,
        registry=wiring.backend().registry,
        **_workflow(),
    )
    if created:
        publish_soon()
    return _json(201 if created else 200, promotion.to_json())


@bp.function_name("list_promotions")
@bp.route(route="promotions", methods=["GET"])
@json_api
def list_promotions(req: func.HttpRequest) -> func.HttpResponse:
    """One page of promotions; `continuation` from an answer asks for the next one."""
    from promotion import wiring
    from promotion.domain import ModelRef, State
    from promotion.ports import MAX_PAGE_SIZE, PromotionFilter

    _caller(req)
    state_name = req.params.get("state")
    try:
        state = State(state_name) if state_name else None
    except ValueError:
        raise BadRequest(f"state: not one of {', '.join(s.value for s in State)}") from None
    name, version = req.params.get("model") or None, req.params.get("version") or None
    if version is not None and name is None:
        raise BadRequest("version: needs model (a version is one model's)")
    if name is not None:
        ModelRef.parse(name, version or "1")  # the names Azure ML allows, else 400
    size_text = req.params.get("page_size") or "50"
    if not size_text.isascii() or not size_text.isdigit() or not 1 <= int(size_text) <= MAX_PAGE_SIZE:
        raise BadRequest(f"page_size: a whole number from 1 to {MAX_PAGE_SIZE}")
    page = wiring.store().list_page(
        PromotionFilter(state, name, version),
        page_size=int(size_text),
        continuation=req.params.get("continuation") or None,
    )
    return _json(200, {"promotions": [p.to_json() for p in page.items], "continuation": page.continuation})


@bp.function_name("who_am_i")
@bp.route(route="me", methods=["GET"])
@json_api
def who_am_i(req: func.HttpRequest) -> func.HttpResponse:
    """The caller as the app sees them, and what the policy lets them do."""
    from promotion import service, wiring
    from promotion.domain import isoformat

    caller = _caller(req)
    rules = wiring.policy().production
    return _json(
        200,
        {
            "name": caller.name,
            "id": caller.id,
            "roles": sorted(caller.roles),
            "may_approve": service.may_approve(caller, rules),
            "required_approvals": rules.required_approvals,
            "require_distinct_approver": rules.require_distinct_approver,
            "approval_ttl_hours": rules.approval_ttl_hours,
            "now": isoformat(wiring.clock()()),
        },
    )


@bp.function_name("get_promotion")
@bp.route(route="promotions/{id}", methods=["GET"])
@json_api
def get_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import wiring

    _caller(req)
    return _json(200, wiring.store().get(_promotion_id(req)).to_json())


@bp.function_name("approve_promotion")
@bp.route(route="promotions/{id}/approve", methods=["POST"])
@bp.queue_output(arg_name="jobs", queue_name=JOBS_QUEUE, connection=STORAGE)
@json_api
def approve_promotion(req: func.HttpRequest, jobs: func.Out[str]) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import State

    caller = _changing_caller(req)
    promotion_id = _promotion_id(req)
    comment = _text(_body(req, required=False), "comment", required=False)
    try:
        promotion = service.approve(
            promotion_id, caller=caller, comment=comment, registry=wiring.backend().registry, **_workflow()
        )
    except service.Voided:
        publish_soon()  # the Voided event, now; the answer is a 409
        raise
    if promotion.state is not State.APPROVED:
        return _json(200, promotion.to_json())  # more approvals are needed
    # Only the approval that completed the promotion reaches this line, so one job is queued.
    jobs.set(job_message(promotion.id))
    publish_soon()
    return _json(202, promotion.to_json())


@bp.function_name("reject_promotion")
@bp.route(route="promotions/{id}/reject", methods=["POST"])
@json_api
def reject_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service

    caller = _changing_caller(req)
    promotion_id = _promotion_id(req)
    comment = _text(_body(req, required=True), "comment", required=True)
    assert comment is not None
    promotion = service.reject(promotion_id, caller=caller, comment=comment, **_workflow())
    publish_soon()
    return _json(200, promotion.to_json())


@bp.function_name("rollback_promotion")
@bp.route(route="promotions/{id}/rollback", methods=["POST"])
@json_api
def rollback_promotion(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import State

    caller = _changing_caller(req)
    promotion_id = _promotion_id(req)
    comment = _text(_body(req, required=True), "comment", required=True)
    assert comment is not None
    promotion = service.rollback(
        promotion_id, caller=caller, comment=comment, deployer=wiring.backend().production, **_workflow()
    )
    publish_soon()
    return _json(200 if promotion.state is State.ROLLED_BACK else 202, promotion.to_json())


@bp.function_name("model_status")
@bp.route(route="models/{name}/versions/{version}", methods=["GET"])
@json_api
def model_status(req: func.HttpRequest) -> func.HttpResponse:
    from promotion import service, wiring
    from promotion.domain import ModelRef, online_name

    _caller(req)
    ref = ModelRef.parse(req.route_params.get("name", ""), req.route_params.get("version", ""))
    backend = wiring.backend()
    status = service.model_status(
        ref,
        staging=backend.staging,
        registry=backend.registry,
        deployer=backend.production,
        store=wiring.store(),
        endpoint=online_name(wiring.policy().production.endpoint_for(ref)),
    )
    if status is None:
        return _error(404, f"model {ref} is unknown: not in staging, the registry or production, and never promoted")
    return _json(200, status)
