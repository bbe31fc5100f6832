"""Import ESPnet's ASR task without the noise it prints when offline.
Why it exists: offline, ESPnet's import prints errors that are not errors (below).

``espnet2.tasks.asr`` pulls in g2p_en, which asks nltk to download tagger data at
import time and prints an error when there is no network, and it reports the
missing optional flash-attn package. Neither matters for this project, so the
text printed to stdout/stderr during that import is dropped; exceptions still
propagate unchanged.
"""

import contextlib
import io


def import_espnet_asr_task():
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        import espnet2.tasks.asr as asr_task
    return asr_task
