"""Who is calling: the identity App Service Authentication (Easy Auth) puts in request headers.

The platform strips these headers from incoming requests and sets them itself, so they are trustworthy
only when platform authentication is on. Outside Azure (Core Tools, tests) nothing stands in front of
the app, and the headers are taken as given so the workflow can be tried locally.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

ROLE_CLAIM_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


class Unauthenticated(Exception):
    """No identity can be established for the caller (answered with 401)."""


@dataclass(frozen=True)
class Principal:
    name: str
    id: str | None = None
    roles: frozenset[str] = frozenset()

    def is_same_person(self, name: str, principal_id: str | None) -> bool:
        if self.id and principal_id:
            return self.id.lower() == principal_id.lower()
        return self.name.lower() == name.lower()


def headers_are_trusted(env: Mapping[str, str]) -> bool:
    running_in_azure = bool(env.get("WEBSITE_INSTANCE_ID"))
    platform_auth_on = env.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"
    return platform_auth_on or not running_in_azure


def principal_from_headers(headers: Mapping[str, str], env: Mapping[str, str]) -> Principal:
    """The caller's identity. A function key alone is never an identity."""
    if not headers_are_trusted(env):
        raise Unauthenticated(
            "identity headers cannot be trusted: App Service Authentication is off for this function app "
            "(WEBSITE_AUTH_ENABLED is not True). Turn on platform authentication to use the promotions API."
        )
    lowered = {key.lower(): value for key, value in headers.items()}
    name = lowered.get("x-ms-client-principal-name", "").strip()
    principal_id = lowered.get("x-ms-client-principal-id", "").strip() or None
    roles: set[str] = set()
    encoded = lowered.get("x-ms-client-principal", "").strip()
    if encoded:
        claims = _decode_claims(encoded)
        roles = {claim["val"] for claim in claims if claim.get("typ") in ROLE_CLAIM_TYPES and "val" in claim}
        name = name or next((c["val"] for c in claims if c.get("typ") == "name" and "val" in c), "")
    if not name:
        raise Unauthenticated("no identity: sign in (the X-MS-CLIENT-PRINCIPAL-NAME header is missing)")
    return Principal(name=name, id=principal_id, roles=frozenset(roles))


def _decode_claims(encoded: str) -> list[dict[str, str]]:
    try:
        document = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
        claims = document.get("claims", [])
        if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
            raise ValueError("claims is not a list of objects")
        return claims
    except (binascii.Error, ValueError, AttributeError, UnicodeDecodeError) as error:
        raise Unauthenticated(f"the X-MS-CLIENT-PRINCIPAL header is not valid base64 JSON: {error}") from None
