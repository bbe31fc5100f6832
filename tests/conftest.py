"""Fixtures shared by the plugin tests (tests/test_kd.py, tests/test_oracle_teacher.py)."""

import pytest


@pytest.fixture(scope="module")
def task():
    """ESPnet's ASR task with the espnet_oracle plugins registered (imported once)."""
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    return OracleASRTask


@pytest.fixture(scope="module")
def token_file(request, tmp_path_factory):
    """An ESPnet token list file holding the requesting test module's ``TOKENS``."""
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("\n".join(request.module.TOKENS) + "\n", encoding="utf-8")
    return path
