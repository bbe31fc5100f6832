#!/usr/bin/env python3
"""3-way speed perturbation of a Kaldi data dir, as ESPnet's recipes do it, without sox.

Why it exists: ESPnet's asr.sh perturbs with sox inside its shell stages; this is the same
data dir in Python (pipeline option ``--speed_perturb_factors``, any recipe).

Usage::

    python -m espnet_oracle.bin.speed_perturb --in_dir data/train_clean_100 --out_dir data/train_clean_100_sp \\
        --factors "0.9 1.0 1.1" [--mode files|pipe] [--audio_dir dump/audio_sp/train_clean_100] [--nj 4]
    python -m espnet_oracle.bin.speed_perturb --pipe 0.9 in.flac > out.wav     # one file, WAV on stdout

What ESPnet does (asr.sh ``--speed_perturb_factors "0.9 1.0 1.1"``): for every factor
f != 1 a copy of the training set whose utterance AND speaker ids get the prefix
``sp<f>-`` and whose audio is ``sox ... speed <f>`` (tempo and pitch scaled by f,
duration by 1/f); factor 1.0 is the set itself, ids unchanged; the copies are combined
into ``<train_set>_sp``. This script writes exactly that data dir. ``speed f`` is a
resampling: the signal is read as if sampled at f x 16 kHz and resampled to 16 kHz
(``scipy.signal.resample_poly``, Kaiser-windowed polyphase FIR); ``utt2dur`` is scaled.

Where the perturbed audio lives (``--mode``):

* ``files`` (default): every perturbed utterance is written once as 16-bit flac under
  ``--audio_dir/sp<f>/<speaker>/<utt>.flac`` (``--nj`` processes, resumable: finished
  files are kept) and ``wav.scp`` names the files. Every reader takes them: ESPnet's
  ``sound`` loader (``feats_type raw``: the front-end runs in the model, so the audio is
  read every epoch -- ESPnet's own asr.sh also writes perturbed audio out, in its
  format_wav_scp stage), the project's fbank stage, soundfile. Costs disk: about 2x the
  set's flac (100 h: ~12 GB more; 960 h: ~120 GB).
* ``pipe``: no audio written; ``wav.scp`` entries are ``python speed_perturb.py --pipe f
  <flac> |`` commands that print a WAV, which Kaldi-style readers (kaldiio, hence the
  project's fbank stage, ``feats_type fbank``) run. Each read starts a Python process
  (~0.3-1 s with scipy), so use it only when features are extracted once; ESPnet's
  ``sound`` loader does not run pipes, so ``feats_type raw`` needs ``files``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Optional

SAMPLE_RATE = 16000
HERE = Path(__file__).resolve()


def log(msg: str) -> None:
    print(f"speed_perturb.py: {msg}", file=sys.stderr, flush=True)


def factor_tag(factor: str) -> str:
    """Kaldi's id prefix for a factor: ``0.9`` -> ``sp0.9-``."""
    return f"sp{factor}-"


def parse_factors(text: str) -> list[str]:
    factors = text.replace(",", " ").split()
    if not factors:
        raise ValueError("no speed perturbation factors given")
    for f in factors:
        if not 0.5 <= float(f) <= 2.0:
            raise ValueError(f"speed factor {f} out of range [0.5, 2]")
    if len(set(float(f) for f in factors)) != len(factors):
        raise ValueError(f"repeated speed factor in {text!r}")
    return factors


def perturb(wave, factor: float):
    """``sox speed <factor>`` of a 1-D float waveform: length N / factor, pitch x factor."""
    import numpy as np
    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(1000)
    # read at factor x rate, resample to rate: up = 1/factor = denominator/numerator
    out = resample_poly(np.asarray(wave, dtype=np.float64), ratio.denominator, ratio.numerator)
    return np.clip(out, -1.0, 1.0 - 2.0**-15).astype(np.float32)


def to_pcm16(wave):
    """Round to 16-bit integers here, so flac files and piped WAVs hold the same samples."""
    import numpy as np

    return np.clip(np.round(np.asarray(wave) * 32768.0), -32768, 32767).astype(np.int16)


def read_audio(path: str):
    import soundfile

    wave, rate = soundfile.read(path, dtype="float32")
    if rate != SAMPLE_RATE or wave.ndim != 1:
        raise ValueError(f"{path}: {rate} Hz, {wave.ndim}-D; expected {SAMPLE_RATE} Hz mono")
    return wave


def write_flac(path: Path, wave) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        soundfile.write(tmp, to_pcm16(wave), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _make_one(job: tuple[str, str, str, float]) -> str:
    utt, src, dst, factor = job
    if not Path(dst).exists():
        write_flac(Path(dst), perturb(read_audio(src), factor))
    return utt


def pipe_command(factor: str, path: str) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE))} --pipe {factor} {shlex.quote(path)} |"


def perturb_dir(in_dir: Path, out_dir: Path, factors: list[str], mode: str = "files",
                audio_dir: Optional[Path] = None, nj: int = 1) -> int:
    from espnet_oracle.utils.datadir import (
        atomic_write_text,
        read_kaldi_map,
        utt2spk_to_spk2utt,
        validate_data_dir,
        write_kaldi_map,
    )

    if mode not in ("files", "pipe"):
        raise ValueError(f"--mode must be files or pipe, got {mode!r}")
    if mode == "files" and audio_dir is None:
        raise ValueError("--mode files needs --audio_dir (where the perturbed flac files go)")
    validate_data_dir(in_dir, optional=("utt2dur",))
    source = json.dumps({"in": str(in_dir.resolve()), "factors": factors, "mode": mode,
                         "audio_dir": str(audio_dir.resolve()) if audio_dir else None})
    stamp = out_dir / ".done"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == source:
        log(f"{out_dir}: up to date")
        return len(read_kaldi_map(out_dir / "utt2spk"))

    wav = read_kaldi_map(in_dir / "wav.scp")
    text = read_kaldi_map(in_dir / "text")
    utt2spk = read_kaldi_map(in_dir / "utt2spk")
    utt2dur = read_kaldi_map(in_dir / "utt2dur") if (in_dir / "utt2dur").is_file() else None
    out = {"wav.scp": {}, "text": {}, "utt2spk": {}}
    if utt2dur is not None:
        out["utt2dur"] = {}
    jobs = []
    for factor in factors:
        f = float(factor)
        tag = "" if f == 1.0 else factor_tag(factor)
        for utt, spec in wav.items():
            new = tag + utt
            if f == 1.0:
                out["wav.scp"][new] = spec
            else:
                if spec.rstrip().endswith("|"):
                    raise ValueError(f"{in_dir / 'wav.scp'}: {utt} is a pipe; speed perturbation needs audio files")
                if mode == "pipe":
                    out["wav.scp"][new] = pipe_command(factor, spec)
                else:
                    dst = audio_dir / tag.rstrip("-") / utt2spk[utt] / f"{new}.flac"
                    out["wav.scp"][new] = str(dst.resolve())
                    jobs.append((new, spec, str(dst), f))
            out["text"][new] = text[utt]
            out["utt2spk"][new] = tag + utt2spk[utt]
            if utt2dur is not None:
                out["utt2dur"][new] = f"{float(utt2dur[utt]) / f:.4f}"
    if jobs:
        log(f"writing {len(jobs)} perturbed utterances under {audio_dir} ({nj} jobs)")
        if nj > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(nj) as pool:
                for _ in pool.imap_unordered(_make_one, jobs, chunksize=16):
                    pass
        else:
            for job in jobs:
                _make_one(job)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for name, mapping in out.items():
        write_kaldi_map(out_dir / name, mapping)
    if utt2dur is None and (out_dir / "utt2dur").exists():
        (out_dir / "utt2dur").unlink()
    write_kaldi_map(out_dir / "spk2utt", utt2spk_to_spk2utt(out["utt2spk"]))
    n = len(validate_data_dir(out_dir, optional=("utt2dur",)))
    atomic_write_text(stamp, source + "\n")
    log(f"{out_dir}: {n} utterances (factors {' '.join(factors)}, {mode})")
    return n


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipe", nargs=2, metavar=("FACTOR", "AUDIO"),
                        help="perturb one file and write it to stdout as 16-bit WAV")
    parser.add_argument("--in_dir", type=Path)
    parser.add_argument("--out_dir", type=Path)
    parser.add_argument("--factors", default="0.9 1.0 1.1", help="space- or comma-separated")
    parser.add_argument("--mode", default="files", choices=("files", "pipe"))
    parser.add_argument("--audio_dir", type=Path, default=None)
    parser.add_argument("--nj", type=int, default=1)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.pipe:
        import soundfile

        factor, path = args.pipe
        buf = io.BytesIO()
        soundfile.write(buf, to_pcm16(perturb(read_audio(path), float(factor))), SAMPLE_RATE,
                        subtype="PCM_16", format="WAV")
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return 0
    if args.in_dir is None or args.out_dir is None:
        get_parser().error("--in_dir and --out_dir are required (or --pipe FACTOR AUDIO)")
    try:
        perturb_dir(args.in_dir, args.out_dir, parse_factors(args.factors), args.mode,
                    args.audio_dir, args.nj)
    except ValueError as exc:  # DataDirError is a ValueError
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
