"""Make a trained one-stage oracle self-distillation model an ordinary ESPnet CTC model.
Why it exists: so the deployed model is an ordinary ESPnet model that ESPnet's own inference loads.

``model: oracle_self_distill`` has an oracle path (source encoder + target
fusion) only for training; inference uses its source-only path: the source
encoder and the CTC layer. This writes, in the experiment dir:

- ``config.inference.yaml``: the training config with ``model: espnet``, the
  self-distillation options removed from ``model_conf``, and ``encoder`` /
  ``encoder_conf`` replaced by the source encoder's (``encoder_conf.source_encoder``
  / ``source_encoder_conf``);
- ``inference.pth``: the checkpoint with ``encoder.source_encoder.*`` renamed to
  ``encoder.*`` and the fusion parameters (target embedding, fusion blocks,
  the oracle path's final norm) dropped; everything else (CTC layer,
  normalization, pre-encoder) keeps its name.

Stock ``espnet2.bin.asr_inference`` and ``espnet2.bin.pack asr`` then take the
pair, and give the source path's CTC posteriors.
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

from espnet_oracle.bin.export_student import INFERENCE_CONFIG, plain_config
from espnet_oracle.utils.datadir import atomic_write_bytes, atomic_write_text

SELF_DISTILL_MODEL_CONF = ("source_ctc_weight", "oracle_ctc_weight", "kd_weight", "kd_temperature", "kd_frames")
INFERENCE_MODEL = "inference.pth"
SOURCE_PREFIX = "encoder.source_encoder."


def inference_config(config: dict) -> dict:
    """The ``model: espnet`` config of a ``model: oracle_self_distill`` config."""
    if config.get("model") != "oracle_self_distill":
        raise ValueError(f"model: {config.get('model')}, not oracle_self_distill")
    encoder_conf = config.get("encoder_conf") or {}
    return dict(plain_config(config, SELF_DISTILL_MODEL_CONF), encoder=encoder_conf.get("source_encoder", "transformer"),
                encoder_conf=dict(encoder_conf.get("source_encoder_conf") or {}))


def inference_state_dict(state: Dict) -> Dict:
    """Rename the source encoder to ``encoder``; drop the oracle path's own parameters."""
    out = {}
    for key, value in state.items():
        if key.startswith(SOURCE_PREFIX):
            out["encoder." + key[len(SOURCE_PREFIX):]] = value
        elif not key.startswith("encoder."):
            out[key] = value
    return out


def export(exp_dir, model_file: Optional[Path] = None) -> Tuple[Path, Path]:
    """Write ``config.inference.yaml`` and ``inference.pth`` into ``exp_dir``.

    ``model_file`` defaults to the averaged checkpoint (valid.loss.ave.pth, else
    valid.loss.best.pth, else latest.pth).
    """
    import io

    import torch

    from espnet_oracle.utils.datadir import model_file as default_model_file

    exp_dir = Path(exp_dir)
    source = exp_dir / "config.yaml"
    if not source.exists():
        raise FileNotFoundError(f"{source} not found — train the model first")
    with open(source, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    plain = inference_config(config)
    model_file = Path(model_file) if model_file is not None else default_model_file(exp_dir)
    state = torch.load(model_file, map_location="cpu", weights_only=False)
    buffer = io.BytesIO()
    torch.save(inference_state_dict(state), buffer)
    config_path, model_path = exp_dir / INFERENCE_CONFIG, exp_dir / INFERENCE_MODEL
    atomic_write_bytes(model_path, buffer.getvalue())
    atomic_write_text(config_path, yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    return config_path, model_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True)
    parser.add_argument("--model_file", default=None,
                        help="checkpoint to convert (default: valid.loss.ave.pth)")
    args = parser.parse_args(argv)
    try:
        config_path, model_path = export(args.exp_dir, args.model_file)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"export_self_distill: {error}")
    print(f"export_self_distill: {config_path} + {model_path} (model: espnet)")


if __name__ == "__main__":
    main()
