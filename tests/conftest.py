"""Fixtures shared by the tests (the plugin tests build models through the task)."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models: one thread is fastest on 2 cores and keeps timings steady."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
