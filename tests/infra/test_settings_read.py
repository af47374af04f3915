from __future__ import annotations

from tests.infra.settings_read import settings_read


def test_reads_are_found_wherever_the_code_reads_them(tmp_path):
    source = tmp_path / "app.py"
    source.write_text(
        '"""Reads PROMOTION_DOCSTRING_ONLY in prose."""\n'
        "import os\n"
        '__all__ = ["PUBLIC_NAME"]\n'
        'TRUST = "PROMOTION_TRUST_X"\n'
        "def f(env):\n"
        '    """Docstring, not a read: PROMOTION_IN_DOC."""\n'
        '    a = os.environ.get("PROMOTION_NEW_SCHEDULE", "")\n'
        '    b = env["AzureWebJobsStorage__queueServiceUri"]\n'
        '    c = _positive(env, "PROMOTION_SOME_DAYS", 7)\n'
        '    d = f"{os.environ}PROMOTION_IN_FSTRING"\n'
        '    e = "Standard_F4s_v2"\n'
        "    return a, b, c, d, e\n"
    )
    assert settings_read([source]) == {
        "PROMOTION_TRUST_X",
        "PROMOTION_NEW_SCHEDULE",
        "AzureWebJobsStorage__queueServiceUri",
        "PROMOTION_SOME_DAYS",
    }
