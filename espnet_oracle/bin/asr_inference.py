"""ESPnet's ``asr_inference`` with the espnet_oracle plugins registered.
Why it exists: ESPnet's entry point cannot build the plugin models until the plugins are registered.

Decodes models whose config names ``model: kd_student`` directly. The Oracle
Teacher needs the transcript and refuses to decode here; use
``espnet_oracle.bin.decode`` (which feeds it) instead.
"""

import espnet_oracle.tasks.oracle_asr  # noqa: F401  (registers the plugins)
from espnet2.bin.asr_inference import get_parser  # noqa: F401
from espnet2.bin.asr_inference import main as espnet_main


def main(cmd=None):
    espnet_main(cmd)


if __name__ == "__main__":
    main()
