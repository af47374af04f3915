"""Who is calling: the identity App Service Authentication (Easy Auth) puts in request headers.

Fail-closed: the platform strips these headers from incoming requests and sets them itself, so they are
trusted only when platform authentication is on (WEBSITE_AUTH_ENABLED=True). Outside Azure nothing stands in
front of the app, so trusting them there takes an explicit opt-in, PROMOTION_TRUST_IDENTITY_HEADERS=true,
which is refused when the app runs in Azure. Anywhere else (a container, Kubernetes, a VM) every route answers
401: a function key alone is never an identity.

Principals are compared after normalisation, so look-alike spellings of one person are one person: Unicode
NFKC, format and other invisible characters removed, whitespace trimmed, case folded; object ids compare as
GUIDs (case and braces do not matter). Someone is the requester when the name or the object id matches.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from promotion.settings import SettingsError

ROLE_CLAIM_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
NAME_CLAIM_TYPES = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
TRUST_SETTING = "PROMOTION_TRUST_IDENTITY_HEADERS"
_MAX_HEADER = 16 * 1024  # App Service's own principal header stays far below this
# Entra user principal names have at most 113 characters and display names 256: anything longer is no real
# principal, and would not fit the history, the events and the store's properties.
MAX_PRINCIPAL_NAME = 256


class Unauthenticated(Exception):
    """No identity can be established for the caller (answered with 401)."""


def visible_text(text: str) -> str:
    """`text` in NFKC with format, control and other invisible characters removed and whitespace trimmed."""
    kept = (ch for ch in unicodedata.normalize("NFKC", text) if unicodedata.category(ch) not in _INVISIBLE)
    return " ".join("".join(kept).split())


# Unicode categories that draw nothing: format (zero-width spaces and joiners, bidi marks), control, surrogates,
# private use and unassigned.
_INVISIBLE = frozenset({"Cf", "Cc", "Cs", "Co", "Cn"})


def name_key(name: str) -> str:
    return visible_text(name).casefold()


def guid_key(text: str | None) -> str | None:
    """The canonical GUID, or None when `text` is not one."""
    if not text:
        return None
    try:
        return str(uuid.UUID(visible_text(text).strip("{}")))
    except ValueError:
        return None


@dataclass(frozen=True)
class Principal:
    name: str
    id: str | None = None  # the object id, canonical
    roles: frozenset[str] = frozenset()

    def is_same_person(self, name: str | None, principal_id: str | None) -> bool:
        """The same person when the name or the object id matches."""
        same_name = bool(name) and name_key(self.name) == name_key(name or "")
        same_id = self.id is not None and self.id == guid_key(principal_id)
        return same_name or same_id

    def is_listed(self, principals: Iterable[str]) -> bool:
        """Whether a list of names and object ids (such as production.approvers) names this principal."""
        return any(self.is_same_person(entry, entry) for entry in principals)


def headers_are_trusted(env: Mapping[str, str]) -> bool:
    platform_auth_on = env.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"
    opted_in = env.get(TRUST_SETTING, "").strip().lower()
    if opted_in not in ("", "true", "false"):
        raise SettingsError(f"setting {TRUST_SETTING} must be true or false")
    if opted_in == "true" and env.get("WEBSITE_INSTANCE_ID"):
        raise SettingsError(
            f"setting {TRUST_SETTING} may not be used in Azure: turn on App Service Authentication instead"
        )
    return platform_auth_on or opted_in == "true"


def principal_from_headers(headers: Mapping[str, str], env: Mapping[str, str]) -> Principal:
    """The caller's identity, or Unauthenticated."""
    if not headers_are_trusted(env):
        raise Unauthenticated(
            "identity headers are not trusted here: turn on App Service Authentication (WEBSITE_AUTH_ENABLED=True) "
            f"in Azure, or set {TRUST_SETTING}=true on a local machine"
        )
    lowered = {key.lower(): value for key, value in headers.items()}
    encoded = lowered.get("x-ms-client-principal", "").strip()
    claims = _decode_claims(encoded) if encoded else []
    roles = frozenset(visible_text(value) for typ, value in claims if typ in ROLE_CLAIM_TYPES)
    name = visible_text(lowered.get("x-ms-client-principal-name", ""))
    if not name:
        name = next((visible_text(value) for typ, value in claims if typ in NAME_CLAIM_TYPES), "")
    if not name:
        raise Unauthenticated("no identity: sign in (the X-MS-CLIENT-PRINCIPAL-NAME header is missing)")
    if len(name) > MAX_PRINCIPAL_NAME:
        raise Unauthenticated(f"the principal name is longer than {MAX_PRINCIPAL_NAME} characters; no Entra name is")
    raw_id = lowered.get("x-ms-client-principal-id", "").strip()
    principal_id = guid_key(raw_id)
    if raw_id and principal_id is None:
        raise Unauthenticated("the X-MS-CLIENT-PRINCIPAL-ID header is not an object id (a GUID)")
    return Principal(name=name, id=principal_id, roles=frozenset(role for role in roles if role))


def _decode_claims(encoded: str) -> list[tuple[str, str]]:
    """The claims of X-MS-CLIENT-PRINCIPAL as (type, value) pairs; every type and value must be a string."""
    if len(encoded) > _MAX_HEADER:
        raise Unauthenticated("the X-MS-CLIENT-PRINCIPAL header is too large")
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise Unauthenticated("the X-MS-CLIENT-PRINCIPAL header is not valid base64 JSON") from None
    claims = document.get("claims", []) if isinstance(document, dict) else None
    if not isinstance(claims, list):
        raise Unauthenticated("the X-MS-CLIENT-PRINCIPAL header has no list of claims")
    pairs = []
    for claim in claims:
        if (
            not isinstance(claim, dict)
            or not isinstance(claim.get("typ"), str)
            or not isinstance(claim.get("val"), str)
        ):
            raise Unauthenticated("the X-MS-CLIENT-PRINCIPAL header has a claim whose type or value is not a string")
        pairs.append((claim["typ"], claim["val"]))
    return pairs


class CrossSiteRequest(Exception):
    """A browser sent a state-changing request from another origin (answered with 403)."""


def check_same_origin(headers: Mapping[str, str], env: Mapping[str, str]) -> None:
    """Refuse a state-changing request another site made a browser send. The platform's session cookie travels
    with cross-site requests, so without this any page could approve in a signed-in approver's name.

    Browsers send Sec-Fetch-Site and Origin; scripts and curl send neither and stay allowed (they hold no cookie of
    ours unless someone gave it to them). Allowed: Sec-Fetch-Site absent or same-origin, and Origin absent or the
    app's own origin: https:// + Host, PROMOTION_PUBLIC_ORIGIN, or http:// + Host on this machine (promotion
    serve). Another port of 127.0.0.1 is same-site, not same-origin, and is refused; so is `Origin: null`.
    """
    from promotion.settings import configured_origin

    lowered = {key.lower(): value.strip() for key, value in headers.items()}
    site = lowered.get("sec-fetch-site")
    if site is not None and site.lower() != "same-origin":
        raise CrossSiteRequest(
            f"cross-site request refused: the browser says it came from a {site!r} page; "
            "use the console at this app's own address"
        )
    origin = lowered.get("origin")
    if origin is None:
        return
    host = lowered.get("host", "")
    allowed = {f"https://{host}".lower()} if host else set()
    if host.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        allowed.add(f"http://{host}".lower())
    configured = configured_origin(env)
    if configured:
        allowed.add(configured.lower())
    if origin.lower().rstrip("/") not in allowed:
        shown = origin.encode("ascii", "backslashreplace").decode()[:200]
        raise CrossSiteRequest(f"cross-site request refused: origin {shown} is not this app's origin")
