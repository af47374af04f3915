"""The approver console: a static page, its script and its stylesheet, shipped in the package (promotion/console).

The page holds no data: it calls the JSON API like any other client, so it is served without identity (platform
authentication excludes this path, and the page sends the browser to sign in when the API answers 401). Every
answer forbids framing, inline script and content sniffing.
"""

from __future__ import annotations

import functools

import azure.functions as func

bp = func.Blueprint()

ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@functools.cache
def console_file(name: str) -> bytes:
    from importlib.resources import files

    return files("promotion").joinpath("console", name).read_bytes()


def _answer(body: bytes, mimetype: str, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        body, status_code=status, mimetype=mimetype, charset="utf-8", headers=dict(SECURITY_HEADERS)
    )


@bp.function_name("console_page")
@bp.route(route="console", methods=["GET"])
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    return _answer(console_file("index.html"), "text/html")


@bp.function_name("console_asset")
@bp.route(route="console/{asset}", methods=["GET"])
def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    asset = req.route_params.get("asset", "")
    if asset not in ASSETS:
        return _answer(b"not found: the console has only app.js and app.css\n", "text/plain", 404)
    return _answer(console_file(asset), ASSETS[asset])
