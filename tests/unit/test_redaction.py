"""Outside text kept in the store (container logs, service messages): secrets redacted, size capped (issue 7 §5)."""

import pytest

from promotion.redaction import MAX_KEPT, capped, redacted

# Secrets of the kinds a failed container's log prints. Each case: the text, and the secret it must not keep.
JWT = (
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkNhcm9sIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
STORAGE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HEX_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978"
SECRETS = [
    ("GET https://acct.blob.core.windows.net/c/m.pkl?sv=2022-11-02&sr=b&sp=r&sig=Zm9vYmFyJTJCYmF6JTNE HTTP/1.1",
     "Zm9vYmFyJTJCYmF6JTNE"),
    ("https://acct.blob.core.windows.net/c?se=2030-01-01&SIG=UPPERcaseSig123%3D&sp=rl", "UPPERcaseSig123%3D"),
    (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={STORAGE_KEY};EndpointSuffix=core.windows.net",
     STORAGE_KEY),
    ("conn: AccountName=acct;AccountKey=c2hvcnRrZXk=;", "c2hvcnRrZXk="),
    ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=s3cr3tSAKvalue0123=",
     "s3cr3tSAKvalue0123="),
    ("Authorization: Bearer abc.def-ghi_jkl~mno+pqr/stu=", "abc.def-ghi_jkl~mno+pqr/stu="),
    ("request failed, header bearer 0123456789abcdefOPAQUE", "0123456789abcdefOPAQUE"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    (f"token in a URL fragment #access_token={JWT}&x=1", JWT),
    (f"decoded claims from {JWT} were refused", JWT),
    ('config {"api_key": "sk-live-1234567890abcdef", "region": "westeurope"}', "sk-live-1234567890abcdef"),
    ("client_secret=Q~8Qa2b3c4d5e6f7g8h9i0j", "Q~8Qa2b3c4d5e6f7g8h9i0j"),
    ("AZURE_CLIENT_SECRET: 'p4ssw0rd-value'", "p4ssw0rd-value"),
    ("password=hunter2hunter2 user=alice", "hunter2hunter2"),
    ("MLFLOW_TRACKING_TOKEN=tok_0123456789", "tok_0123456789"),
    ("x-api-key: AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd"),
    ("env PRIMARY=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl+/==", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEf"),
    (f"scoring key {HEX_KEY}", HEX_KEY),
    # URL-encoded SAS, as a URL inside another URL's query or a logged request line prints it
    ("GET /fetch?src=https%3A%2F%2Facct.blob.core.windows.net%2Fm%3Fsv%3D2022-11-02%26sig%3DZm9vYmFyQmF6MTIz%26sp%3Dr",
     "Zm9vYmFyQmF6MTIz"),
    ("blob url: ...m.pkl?sv=2022-11-02%26SIG%3dlowerCaseEncoded99&sp=r", "lowerCaseEncoded99"),
    ("twice encoded: src%3Dhttps%253A%252F%252Fa%252Fb%253Fsig%253DdoubleEnc0ded7 end", "doubleEnc0ded7"),
    # credentials in a URL's user information
    ("pip: Looking in indexes: https://builder:Sup3rS3cret!@pkgs.contoso.com/simple", "Sup3rS3cret!"),
    ("git clone https://x-access-token:ghp_abc123def456@github.com/org/repo.git", "ghp_abc123def456"),
    ("postgresql://svc:pa55%40word@db.contoso.com:5432/features", "pa55%40word"),
    ("index-url=https%3A%2F%2Fbuilder%3AEnc0dedPw%40pkgs.contoso.com%2Fsimple", "Enc0dedPw"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secrets_are_redacted(text, secret):
    cleaned = redacted(text)
    assert secret not in cleaned
    assert "redacted" in cleaned


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_redaction_keeps_what_names_the_secret(text, secret):
    # What names the secret (sig=, AccountKey=, Bearer) stays, so the reader knows what was there.
    before = text.partition(secret)[0]
    assert redacted(text).startswith(before[: max(0, len(before) - 30)])


def test_every_secret_in_one_log_is_redacted():
    log = "\n".join(text for text, _ in SECRETS)
    cleaned = redacted(log)
    for _, secret in SECRETS:
        assert secret not in cleaned
    assert cleaned.count("\n") == log.count("\n")


def test_redacting_twice_changes_nothing_more():
    log = "\n".join(text for text, _ in SECRETS)
    assert redacted(redacted(log)) == redacted(log)


NORMAL_LOG = """\
2026-11-26T12:00:01.123Z | INFO | Starting gunicorn 20.1.0
2026-11-26T12:00:01.456Z | INFO | Listening at: http://0.0.0.0:31311 (12)
Azure ML Inferencing HTTP server v1.3.0
Server Settings
---------------
Entry Script Name: /var/azureml-app/score.py
Model Directory: /var/azureml-app/azureml-models/taxi-fare/2
Worker Count: 1
Routes: liveness probe GET 127.0.0.1:31311/, score POST 127.0.0.1:31311/score
Traceback (most recent call last):
  File "/var/azureml-app/score.py", line 12, in init
    model = mlflow.pyfunc.load_model(os.path.join(model_dir, "model"))
ModuleNotFoundError: No module named 'sklearn'
ERROR: model load failed after 3 attempts; status code 500; request id 6f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f
Memory: 2048 MiB used of 8192 MiB; exit code 137 (OOMKilled)
"""


def test_normal_log_text_survives():
    assert redacted(NORMAL_LOG) == NORMAL_LOG


@pytest.mark.parametrize(
    "line",
    [
        "KeyError: 'features'",
        "KeyError: 'petal_length'",
        '    raise KeyError("column_name")',
    ],
)
def test_a_python_key_error_keeps_the_missing_key(line):
    # The most common reason a scoring script fails to start; the missing key's name is the diagnosis.
    assert redacted(line) == line


@pytest.mark.parametrize(
    "text",
    [
        "",
        "deployment taxi-fare-v2 failed: ResourceNotReady",
        "the model's signature has no key 'features'",
        "keyboard interrupt",
        "token count: 12",
        "https://acct.blob.core.windows.net/container/model.pkl?sv=2022-11-02&sp=r",
        "/subscriptions/12345678-1234-1234-1234-123456789abc/resourceGroups/rg",
        "ünïcode text 日本語 stays",
    ],
)
def test_ordinary_lines_survive(text):
    assert redacted(text) == text


# -- the cap ------------------------------------------------------------------------------------------------


def test_short_text_is_kept_whole():
    assert capped("short") == "short"
    assert capped("x" * MAX_KEPT) == "x" * MAX_KEPT


def test_the_default_cap_is_about_4_kib():
    assert 3500 <= MAX_KEPT <= 4096
    assert len(capped("x" * 100_000)) <= MAX_KEPT


@pytest.mark.parametrize(
    ("limit", "length"),
    [
        (limit, length)
        for limit in (100, 500, 1000, 4096)
        for length in (101, 1001, 4097, 65_536, 1_000_000)
        if length > limit
    ],
)
def test_long_text_keeps_at_most_the_limit_and_its_end(limit, length):
    text = "".join(f"line {number:07d}\n" for number in range(length // 13 + 1))[:length]

    kept = capped(text, limit)

    assert len(kept) <= limit
    tail = text[-(limit // 2) :]
    assert kept.endswith(tail)  # a log's last lines say why it failed
    assert len(kept) >= limit // 2


def test_the_cap_says_that_text_was_left_out():
    kept = capped("a" * 10_000 + "THE END", 1000)
    assert kept.endswith("THE END")
    assert "left out" in kept
    assert not kept.startswith("a")


@pytest.mark.parametrize("limit", [1, 10, 30, 47, 48])
def test_a_small_limit_is_kept_too(limit):
    text = "x" * 200 + "END"
    kept = capped(text, limit)
    assert len(kept) <= limit
    assert text.endswith(kept[-min(len(kept), 3) :])


def test_capped_then_stored_stays_under_the_table_storage_property_limit():
    # 64 KiB per property, counted in UTF-16: the worst case is a character that takes two code units.
    kept = capped(redacted("🚀" * 50_000))
    assert len(kept.encode("utf-16-le")) < 64 * 1024


@pytest.mark.parametrize(
    "text",
    [
        "x" * 200_000,  # one long word: a pattern that backtracks over it would take minutes
        "key" * 70_000,
        ("AccountKey=" + "a" * 30) * 5_000,
        "line of an ordinary container log\n" * 30_000,
        "://a:" * 40_000,  # URL starts without an end to their user information
        "https%3A%2F%2Fa%3A" * 10_000,
        "sig%3D" * 30_000,
        "a%26" * 50_000,
    ],
)
def test_redaction_stays_fast_on_long_untrusted_text(text):
    import time

    from promotion.redaction import MAX_KEPT, kept

    started = time.monotonic()
    result = kept(text)
    assert time.monotonic() - started < 2
    assert len(result) <= MAX_KEPT
