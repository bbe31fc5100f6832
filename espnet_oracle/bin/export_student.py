"""Make a trained KD student an ordinary ESPnet model.

``model: kd_student`` exists only for training: its loss reads teacher
posteriors, but it has no parameters beyond ``model: espnet``. This writes
``<exp_dir>/config.inference.yaml``: the training config with ``model: espnet``,
the KD-only options and the teacher-posterior data entries removed. Stock
``espnet2.bin.asr_inference`` and ``espnet2.bin.pack asr`` then take it with the
unchanged ``valid.loss.ave.pth``. For a no-KD student the file is a copy.
"""

import argparse
import sys
from pathlib import Path

import yaml

from espnet_oracle.utils.datadir import atomic_write_text

KD_MODEL_CONF = ("kd_weight", "kd_temperature", "kd_frames")
INFERENCE_CONFIG = "config.inference.yaml"


def plain_config(config: dict) -> dict:
    config = dict(config)
    if config.get("model") == "kd_student":
        config["model"] = "espnet"
    config["model_conf"] = {
        k: v for k, v in (config.get("model_conf") or {}).items() if k not in KD_MODEL_CONF
    }
    for key in ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type"):
        if key in config:
            config[key] = [entry for entry in config[key] if entry[1] != "teacher_post"]
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp_dir", required=True)
    args = parser.parse_args(argv)
    exp_dir = Path(args.exp_dir)
    source = exp_dir / "config.yaml"
    if not source.exists():
        sys.exit(f"export_student: {source} not found — train the student first")
    with open(source, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if config.get("model") not in ("kd_student", "espnet"):
        sys.exit(f"export_student: {source} has model: {config.get('model')}, not a CTC student")
    text = yaml.safe_dump(plain_config(config), sort_keys=False, allow_unicode=True)
    atomic_write_text(exp_dir / INFERENCE_CONFIG, text)
    print(f"export_student: {exp_dir / INFERENCE_CONFIG} (model: espnet)")


if __name__ == "__main__":
    main()
