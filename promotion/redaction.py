"""Text from outside (container logs, service messages) made fit to keep: secrets removed and size capped.

A failed deployment's container log may print connection strings, SAS URLs or tokens, and it can be long;
stored unbounded it would break Table Storage's 64 KiB property limit and leak secrets into the audit trail.
"""

from __future__ import annotations

import re

MAX_KEPT = 4096  # characters of outside text kept in one stored field
# Redaction reads at most this much of the end of a text: the patterns stay linear, and a multi-megabyte log costs
# no more than this. Only the last MAX_KEPT characters are kept anyway.
_READ = 16 * MAX_KEPT

# '=', '&', ':', '/' and '@' as a URL inside another URL's query spells them: percent-encoded, perhaps twice.
_EQ, _AMP, _COLON, _SLASH, _AT = (rf"%(?:25)*{code}" for code in ("3D", "26", "3A", "2F", "40"))

# Every pattern is linear in the text: each starts at a fixed marker and its repetitions are bounded or cannot
# overlap what follows them, so a long word without an end costs one pass, not one pass per character.
_SECRETS = [
    # SAS signatures and other signed query parameters, with the '=' (and the '?' or '&' before them, and the '&'
    # that ends them) plain or encoded
    (
        re.compile(
            rf"(?i)(?:(?<![a-z])|(?<=3F|26))(sig|signature|se?cret|token|code|key)(=|{_EQ})(?:(?!{_AMP})[^&\s\"';])+"
        ),
        r"\1\2[redacted]",
    ),
    # the password in a URL's user information: scheme://user:password@host, plain or encoded
    (re.compile(r"(://[^\s/@:?#]{0,256}:)[^\s/@]{1,512}@"), r"\1[redacted]@"),
    (
        re.compile(rf"(?i)({_COLON}{_SLASH}{_SLASH}[^\s/@:%]{{0,256}}{_COLON})[^\s/@&]{{1,512}}?({_AT})"),
        r"\1[redacted]\2",
    ),
    # connection-string parts
    (re.compile(r"(?i)\b(AccountKey|SharedAccessKey|Password|Pwd)=([^;\s\"']+)"), r"\1=[redacted]"),
    # authorization headers and bearer tokens
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    # JSON Web Tokens anywhere
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # "key": "value", api_key: value, client_secret=value, password: value; not "KeyError: 'features'", whose
    # value is the missing key a scoring script failed on
    (
        re.compile(
            r"(?i)([\"']?[\w.-]{0,40}(?:key|secret|password|passwd|token|credential)(?:s|_?id|_?value)?[\"']?\s*[:=]\s*)"
            r"([\"']?)[^\s\"',;}]{6,}\2"
        ),
        r"\1\2[redacted]\2",
    ),
    # long base64 or hex runs that look like keys
    (re.compile(r"\b[A-Za-z0-9+/]{40,}={0,2}"), "[redacted-key]"),
    (re.compile(r"\b[0-9a-fA-F]{40,}\b"), "[redacted-key]"),
]


def kept(text: str) -> str:
    """Outside text as it may be stored: its end, with secrets redacted, at most MAX_KEPT characters."""
    return capped(redacted(text[-_READ:]))


def redacted(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def capped(text: str, limit: int = MAX_KEPT) -> str:
    """At most `limit` characters: the end is kept, since a log's last lines say why it failed."""
    if len(text) <= limit:
        return text
    kept = limit - len(f"[{len(text)} characters left out]\n")  # the marker, counted at its longest
    if kept <= 0:
        return text[len(text) - limit :]
    return f"[{len(text) - kept} characters left out]\n" + text[-kept:]
