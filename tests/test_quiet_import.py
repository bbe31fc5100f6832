"""The task import leaves g2p_en and tacotron_cleaner unloaded until used, and they still work."""

import subprocess
import sys

CHECK = r"""
import sys
from espnet_oracle.tasks.oracle_asr import OracleASRTask
loaded = [m for m in ("inflect", "nltk", "g2p_en.g2p", "tacotron_cleaner.numbers") if m in sys.modules]
assert not loaded, f"loaded by the task import: {loaded}"
import inspect
assert inspect.getmodule(OracleASRTask).__name__ == "espnet_oracle.tasks.oracle_asr"
from espnet2.text.cleaner import TextCleaner
print(TextCleaner("tacotron")("(Hello-World);  jr. 42"))
import g2p_en
import tacotron_cleaner.cleaners
print(g2p_en.G2p.__module__, tacotron_cleaner.cleaners.__name__, "inflect" in sys.modules)
"""


def test_text_front_ends_load_on_first_use():
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["HELLO WORLD, JUNIOR FORTY TWO",
                                       "g2p_en.g2p tacotron_cleaner.cleaners True"]
