"""Who is calling (issue 7, "A fail-closed API"): identity headers are trusted only where the platform sets them,
claims must be strings, and principals are compared after normalisation."""

import base64
import json
import uuid

import pytest

from promotion.identity import (
    TRUST_SETTING,
    Principal,
    Unauthenticated,
    guid_key,
    headers_are_trusted,
    name_key,
    principal_from_headers,
    visible_text,
)
from promotion.settings import SettingsError

IN_AZURE_AUTH_ON = {"WEBSITE_INSTANCE_ID": "abc", "WEBSITE_AUTH_ENABLED": "True"}
IN_AZURE_AUTH_OFF = {"WEBSITE_INSTANCE_ID": "abc"}
LOCAL_OPT_IN = {TRUST_SETTING: "true"}
CAROL_ID = "33333333-0000-4000-8000-00000000000c"
OTHER_ID = "44444444-0000-4000-8000-00000000000d"


def principal_header(claims, **extra):
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims, **extra}).encode()).decode()


def carol_headers(**overrides):
    headers = {
        "X-MS-CLIENT-PRINCIPAL-NAME": "carol@contoso.com",
        "X-MS-CLIENT-PRINCIPAL-ID": CAROL_ID,
        "X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "roles", "val": "Promotion.Approver"}]),
    }
    headers.update(overrides)
    return {key: value for key, value in headers.items() if value is not None}


def carol(env=LOCAL_OPT_IN):
    return principal_from_headers(carol_headers(), env)


# -- when the headers are trusted ---------------------------------------------------------------------------


def test_easy_auth_headers_give_name_id_and_roles():
    headers = {
        "x-ms-client-principal-name": "carol@contoso.com",
        "X-MS-CLIENT-PRINCIPAL-ID": CAROL_ID,
        "X-MS-CLIENT-PRINCIPAL": principal_header(
            [{"typ": "roles", "val": "Promotion.Approver"}, {"typ": "roles", "val": "Reader"}]
        ),
    }
    principal = principal_from_headers(headers, IN_AZURE_AUTH_ON)
    assert principal == Principal("carol@contoso.com", CAROL_ID, frozenset({"Promotion.Approver", "Reader"}))


def test_the_name_can_come_from_the_claims():
    headers = {"X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "name", "val": "dave"}])}
    assert principal_from_headers(headers, LOCAL_OPT_IN).name == "dave"
    headers = {"X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "preferred_username", "val": "dave@x"}])}
    assert principal_from_headers(headers, LOCAL_OPT_IN).name == "dave@x"


@pytest.mark.parametrize(
    "env",
    [
        IN_AZURE_AUTH_ON,
        {"WEBSITE_AUTH_ENABLED": "true"},
        {"WEBSITE_AUTH_ENABLED": " TRUE "},
        LOCAL_OPT_IN,
        {TRUST_SETTING: "True"},
        {TRUST_SETTING: "true", "WEBSITE_AUTH_ENABLED": "False"},
    ],
)
def test_headers_are_trusted_with_platform_auth_or_the_local_opt_in(env):
    assert headers_are_trusted(env) is True
    assert principal_from_headers(carol_headers(), env).name == "carol@contoso.com"


@pytest.mark.parametrize(
    "env",
    [
        {},  # a container, Kubernetes, a VM: nothing says who set the headers
        IN_AZURE_AUTH_OFF,
        {"WEBSITE_AUTH_ENABLED": "False"},
        {"WEBSITE_AUTH_ENABLED": ""},
        {"WEBSITE_AUTH_ENABLED": "1"},
        {TRUST_SETTING: "false"},
        {TRUST_SETTING: ""},
        {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    ],
)
def test_untrusted_headers_are_unauthenticated(env):
    assert headers_are_trusted(env) is False
    with pytest.raises(Unauthenticated, match="not trusted"):
        principal_from_headers(carol_headers(), env)


@pytest.mark.parametrize("env", [{**IN_AZURE_AUTH_OFF, **LOCAL_OPT_IN}, {**IN_AZURE_AUTH_ON, **LOCAL_OPT_IN}])
def test_the_local_opt_in_is_refused_in_azure_naming_the_setting(env):
    with pytest.raises(SettingsError, match=TRUST_SETTING):
        headers_are_trusted(env)
    with pytest.raises(SettingsError, match=TRUST_SETTING):
        principal_from_headers(carol_headers(), env)


@pytest.mark.parametrize("value", ["yes-please", "2", "enabled!", "supersecret"])
def test_an_unclear_opt_in_is_a_settings_error_without_the_value(value):
    with pytest.raises(SettingsError, match=TRUST_SETTING) as refused:
        headers_are_trusted({TRUST_SETTING: value})
    assert value not in str(refused.value)


# -- broken or hostile headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "no identity"),
        ({"x-functions-key": "secret"}, "no identity"),
        ({"X-MS-CLIENT-PRINCIPAL-NAME": ""}, "no identity"),
        ({"X-MS-CLIENT-PRINCIPAL-NAME": "   "}, "no identity"),
        ({"X-MS-CLIENT-PRINCIPAL-NAME": "\u200b\u200d\ufeff"}, "no identity"),  # only invisible characters
        ({"X-MS-CLIENT-PRINCIPAL": "%%%"}, "not valid base64 JSON"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[1, 2").decode()}, "not valid base64 JSON"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": 3}').decode()}, "no list of claims"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'"just a string"').decode()}, "no list of claims"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"\xff\xfe").decode()}, "not valid base64 JSON"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[" * 5000 + b"]" * 5000).decode()}, "X-MS-CLIENT-PRINCIPAL"),
        ({"X-MS-CLIENT-PRINCIPAL": "A" * 100_000}, "too large"),
    ],
)
def test_missing_or_broken_identity_is_unauthenticated(headers, message):
    with pytest.raises(Unauthenticated, match=message):
        principal_from_headers(headers, LOCAL_OPT_IN)


@pytest.mark.parametrize(
    "claim",
    [
        {"typ": "roles", "val": ["Promotion.Approver", "Reader"]},  # a list: answered 500 before
        {"typ": "roles", "val": {"role": "Promotion.Approver"}},
        {"typ": "name", "val": {"first": "carol"}},  # an object: answered 500 before
        {"typ": "name", "val": ["carol"]},
        {"typ": "roles", "val": None},
        {"typ": "roles", "val": 7},
        {"typ": "roles", "val": True},
        {"typ": ["roles"], "val": "Promotion.Approver"},
        {"typ": None, "val": "x"},
        {"val": "Promotion.Approver"},
        ["roles", "Promotion.Approver"],
        "roles=Promotion.Approver",
    ],
)
def test_claims_that_are_not_strings_are_unauthenticated(claim):
    headers = carol_headers(**{"X-MS-CLIENT-PRINCIPAL": principal_header([claim])})
    with pytest.raises(Unauthenticated, match="not a string"):
        principal_from_headers(headers, LOCAL_OPT_IN)


def test_a_name_claim_that_is_an_object_is_unauthenticated_without_a_name_header():
    headers = {"X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "name", "val": {"display": "carol"}}])}
    with pytest.raises(Unauthenticated):
        principal_from_headers(headers, LOCAL_OPT_IN)


@pytest.mark.parametrize(
    "principal_id", ["not-a-guid", "3333", "33333333-0000-4000-8000-00000000000g", "{}", "carol@contoso.com"]
)
def test_a_principal_id_that_is_not_a_guid_is_unauthenticated(principal_id):
    with pytest.raises(Unauthenticated, match="GUID"):
        principal_from_headers(carol_headers(**{"X-MS-CLIENT-PRINCIPAL-ID": principal_id}), LOCAL_OPT_IN)


def test_a_missing_principal_id_leaves_the_id_empty():
    principal = principal_from_headers(carol_headers(**{"X-MS-CLIENT-PRINCIPAL-ID": None}), LOCAL_OPT_IN)
    assert principal.id is None and principal.name == "carol@contoso.com"


# -- normalisation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "carol@contoso.com",
        "CAROL@Contoso.COM",
        "  carol@contoso.com\t",
        "car\u200bol@contoso.com",  # ZERO WIDTH SPACE
        "\u200ecarol@contoso.com\u2060",  # LEFT-TO-RIGHT MARK, WORD JOINER
        "ｃａｒｏｌ＠ｃｏｎｔｏｓｏ．ｃｏｍ",  # fullwidth letters, NFKC makes them ASCII
        "Ｃａｒｏｌ@contoso.com\ufeff",
    ],
)
def test_spellings_of_one_name_are_one_person(spelling):
    assert name_key(spelling) == name_key("carol@contoso.com")
    assert carol().is_same_person(spelling, None)
    header_spelling = principal_from_headers(carol_headers(**{"X-MS-CLIENT-PRINCIPAL-NAME": spelling}), LOCAL_OPT_IN)
    assert header_spelling.is_same_person("carol@contoso.com", None)
    assert name_key(header_spelling.name) == "carol@contoso.com"


@pytest.mark.parametrize("other", ["carol@contoso.co", "caro1@contoso.com", "carol@contoso.com.evil", "c arol"])
def test_different_names_are_different_people(other):
    assert not carol().is_same_person(other, None)


@pytest.mark.parametrize("where", ["header", "claim"])
def test_a_principal_name_longer_than_any_real_one_is_unauthenticated(where):
    name = "a" * 300 + "@contoso.com"
    if where == "header":
        headers = {"X-MS-CLIENT-PRINCIPAL-NAME": name}
    else:
        headers = {"X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "name", "val": name}])}
    with pytest.raises(Unauthenticated, match="principal name is longer than 256 characters"):
        principal_from_headers(headers, LOCAL_OPT_IN)
    longest = "a" * 244 + "@contoso.com"  # 256 characters
    assert principal_from_headers({"X-MS-CLIENT-PRINCIPAL-NAME": longest}, LOCAL_OPT_IN).name == longest


def test_names_are_kept_readable():
    principal = principal_from_headers(
        carol_headers(**{"X-MS-CLIENT-PRINCIPAL-NAME": " Car\u200bol  Smith "}), LOCAL_OPT_IN
    )
    assert principal.name == "Carol Smith"


@pytest.mark.parametrize(
    "spelling",
    [
        CAROL_ID,
        CAROL_ID.upper(),
        "{" + CAROL_ID + "}",
        "{" + CAROL_ID.upper() + "}",
        " " + CAROL_ID + " ",
        CAROL_ID.replace("-", ""),
    ],
)
def test_object_ids_compare_as_guids(spelling):
    assert guid_key(spelling) == CAROL_ID
    assert carol().is_same_person(None, spelling)
    from_header = principal_from_headers(carol_headers(**{"X-MS-CLIENT-PRINCIPAL-ID": spelling}), LOCAL_OPT_IN)
    assert from_header.id == CAROL_ID


@pytest.mark.parametrize("text", [None, "", "not-a-guid", "{" * 3])
def test_guid_key_of_a_non_guid_is_none(text):
    assert guid_key(text) is None


def test_visible_text_removes_what_draws_nothing():
    assert visible_text("\u200b") == ""
    assert visible_text(" a\u200bb \u00a0 c\u200d ") == "ab c"
    assert visible_text("ﬁne") == "fine"  # the ligature, by NFKC


# -- who is who ---------------------------------------------------------------------------------------------


def test_the_same_name_with_another_object_id_is_the_same_person():
    # A second account, or a guest, with the requester's name must not approve the request.
    assert carol().is_same_person("carol@contoso.com", OTHER_ID)
    assert carol().is_same_person("CAROL@contoso.com", str(uuid.uuid4()))


def test_the_same_object_id_with_another_name_is_the_same_person():
    assert carol().is_same_person("carol.smith@contoso.com", CAROL_ID.upper())


def test_another_name_and_another_id_is_another_person():
    assert not carol().is_same_person("dave@contoso.com", OTHER_ID)
    assert not carol().is_same_person(None, None)
    assert not carol().is_same_person("", "")


def test_a_principal_without_an_id_is_matched_by_name_only():
    nameless_id = Principal("carol@contoso.com")
    assert nameless_id.is_same_person("carol@contoso.com", None)
    assert not nameless_id.is_same_person("dave", None)
    assert not nameless_id.is_same_person("dave", CAROL_ID)


@pytest.mark.parametrize(
    "approvers, listed",
    [
        (["carol@contoso.com"], True),
        (["Carol@Contoso.com "], True),
        (["ｃａｒｏｌ@contoso.com"], True),
        (["dave@contoso.com", CAROL_ID], True),
        (["{" + CAROL_ID.upper() + "}"], True),
        (["dave@contoso.com", OTHER_ID], False),
        ([], False),
        (["carol"], False),
    ],
)
def test_is_listed_matches_names_and_object_ids(approvers, listed):
    assert carol().is_listed(approvers) is listed
