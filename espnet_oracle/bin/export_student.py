"""Make a trained KD student an ordinary ESPnet model.
Why it exists: so the student is an ordinary ESPnet model that ESPnet's own inference loads.

``model: kd_student`` exists only for training: its loss reads teacher
posteriors (stored, or from an online teacher it holds outside its state_dict),
but it has no parameters beyond ``model: espnet``. This writes
``<exp_dir>/config.inference.yaml``: the training config with ``model: espnet``,
the KD-only options (the online teacher's files among them) and the
teacher-posterior data entries removed. Stock
``espnet2.bin.asr_inference`` and ``espnet2.bin.pack asr`` then take it with the
unchanged ``valid.loss.ave.pth``. For a no-KD student the config is the same
apart from the files below.

Files inference needs besides the weights (the global-MVN stats, a BPE model)
are copied into ``<exp_dir>`` and ``config.inference.yaml`` names the copies by
their paths relative to the working directory (the recipe dir), the form in
which ``espnet2.bin.pack`` stores a file. Packed from the recipe dir with every
such copy as an ``--option``, the model unpacks anywhere, because unpacking
rewrites each config value equal to a stored file's name to the unpacked copy::

    python -m espnet2.bin.pack asr --asr_train_config exp/S/config.inference.yaml \
        --asr_model_file exp/S/valid.loss.ave.pth --option exp/S/feats_stats.npz \
        --outpath S.zip

(this command, for the dir at hand, is printed). Without the ``--option`` the
archive lacks the stats and the unpacked config still names a path of the
recipe dir. An experiment dir outside the working directory is named by its
absolute path: inference works, but pack stores it under another name and an
unpacked model would still need the original file.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

import yaml

from espnet_oracle.utils.datadir import atomic_copy, atomic_write_text

KD_MODEL_CONF = ("kd_weight", "kd_temperature", "kd_frames", "guided_ctc_weight", "seq_kd_weight",
                 "kd_shift_frames", "kd_shift_tolerance", "online_teacher_config", "online_teacher_model_file")
# training-only inputs of a KD student
KD_DATA_NAMES = ("teacher_post", "teacher_topk_post", "teacher_hyp")
INFERENCE_CONFIG = "config.inference.yaml"
STATS_COPY = "feats_stats.npz"


def pack_path(path: Path) -> str:
    """``path`` as ``espnet2.bin.pack`` stores it: relative to the cwd if inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def copy_into(exp_dir: Path, source: str, name: str, what: str) -> str:
    """Copy ``source`` (a config path, relative to the cwd) to ``exp_dir/name``; return the copy's pack path."""
    target = exp_dir / name
    src = Path(source)
    if src.exists():
        same = target.exists() and (src.resolve() == target.resolve()
                                    or src.read_bytes() == target.read_bytes())
        if not same:
            atomic_copy(src, target)
    elif not target.exists():
        sys.exit(f"export_student: {what} {source} (named in {exp_dir / 'config.yaml'}) not found")
    else:
        print(f"export_student: {what} {source} not found; keeping the copy made at an earlier export, "
              f"{target}", file=sys.stderr)
    return pack_path(target)


def inference_files(config: dict, exp_dir: Path) -> dict:
    """Copy the files inference reads into ``exp_dir``; point ``config`` at them; return {key: path}."""
    files = {}
    if config.get("normalize") == "global_mvn":
        normalize_conf = dict(config.get("normalize_conf") or {})
        if not normalize_conf.get("stats_file"):
            sys.exit(f"export_student: {exp_dir / 'config.yaml'} has global_mvn without a stats_file")
        normalize_conf["stats_file"] = copy_into(exp_dir, normalize_conf["stats_file"], STATS_COPY,
                                                 "global-MVN stats")
        config["normalize_conf"] = normalize_conf
        files["stats_file"] = normalize_conf["stats_file"]
    if config.get("bpemodel"):
        config["bpemodel"] = copy_into(exp_dir, config["bpemodel"], Path(config["bpemodel"]).name,
                                       "BPE model")
        files["bpemodel"] = config["bpemodel"]
    return files


def pack_command(exp_dir: Path, files: dict) -> str:
    args = ["python", "-m", "espnet2.bin.pack", "asr",
            "--asr_train_config", str(exp_dir / INFERENCE_CONFIG),
            "--asr_model_file", str(exp_dir / "valid.loss.ave.pth")]
    for path in files.values():
        args += ["--option", path]
    args += ["--outpath", f"{exp_dir.name}.zip"]
    return " ".join(shlex.quote(a) for a in args)


def plain_config(config: dict, training_only=KD_MODEL_CONF) -> dict:
    """``config`` as ``model: espnet``: without the ``training_only`` model_conf keys and the KD data entries."""
    config = dict(config, model="espnet", model_conf={
        k: v for k, v in (config.get("model_conf") or {}).items() if k not in training_only})
    for key in ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type"):
        if key in config:
            config[key] = [entry for entry in config[key] if entry[1] not in KD_DATA_NAMES]
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
    config = plain_config(config)
    files = inference_files(config, exp_dir)
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    atomic_write_text(exp_dir / INFERENCE_CONFIG, text)
    print(f"export_student: {exp_dir / INFERENCE_CONFIG} (model: espnet"
          + "".join(f", {k}: {v}" for k, v in files.items()) + ")")
    if any(os.path.isabs(v) for v in files.values()):
        print(f"export_student: warning: {exp_dir} is outside the working directory {Path.cwd()}; "
              "a model packed from here would still need those files", file=sys.stderr)
    print(f"export_student: pack with: {pack_command(exp_dir, files)}")


if __name__ == "__main__":
    main()
