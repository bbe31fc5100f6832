#!/usr/bin/env python3
"""Speed perturbation of a Kaldi data dir as ESPnet's asr.sh does it, without sox (stage 1 of the
pipeline, ``--speed_perturb_factors``).

Usage::

    python -m espnet_oracle.bin.speed_perturb --in_dir data/train --out_dir data/train_sp \\
        --factors "0.9 1.0 1.1" --audio_dir data/train_sp/audio [--nj 4]

As ESPnet: for every factor f != 1 a copy of the set whose utterance AND speaker ids get the prefix
``sp<f>-`` and whose audio is ``sox speed f`` (tempo and pitch x f, duration / f); factor 1.0 is the
set itself. ``speed f`` is a resampling: the signal is read as if sampled at f x its rate and
resampled to its rate (``scipy.signal.resample_poly``; any rate, channels kept); ``utt2dur`` is
scaled. The perturbed audio is written
once as 16-bit flac under ``--audio_dir/sp<f>/<speaker>/<utt>.flac`` (resumable: finished files are
kept), so that every reader takes it, ESPnet's ``sound`` loader (``feats_type raw``, which runs no
``command |`` pipes) included. Disk: about 2x the set's flac.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Optional

from espnet_oracle.utils.datadir import (
    atomic_write_bytes,
    atomic_write_text,
    read_kaldi_map,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kaldi_map,
)


def log(msg: str) -> None:
    print(f"speed_perturb.py: {msg}", file=sys.stderr, flush=True)


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
    """``sox speed <factor>`` of a float waveform (N,) or (N, C) as 16-bit samples: length N / factor,
    pitch x factor, same sample rate."""
    import numpy as np
    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(1000)
    # read at factor x rate, resample to rate: up = 1/factor = denominator/numerator
    out = resample_poly(np.asarray(wave, dtype=np.float64), ratio.denominator, ratio.numerator, axis=0)
    out = np.clip(out, -1.0, 1.0 - 2.0**-15).astype(np.float32)
    return np.round(out * 32768.0).astype(np.int16)  # in range: clipped to [-1, 1 - 2^-15] above


def _make_one(job: tuple[str, str, float]) -> None:
    """Perturb one file into a 16-bit flac (skipped when it exists)."""
    import soundfile

    src, dst, factor = job
    if Path(dst).exists():
        return
    wave, rate = soundfile.read(src, dtype="float32")
    buf = io.BytesIO()
    soundfile.write(buf, perturb(wave, factor), rate, subtype="PCM_16", format="FLAC")
    atomic_write_bytes(dst, buf.getvalue())


def perturb_dir(in_dir: Path, out_dir: Path, factors: list[str], audio_dir: Path, nj: int = 1) -> int:
    validate_data_dir(in_dir, optional=("utt2dur",))
    source = json.dumps({"in": str(in_dir.resolve()), "factors": factors,
                         "audio_dir": str(audio_dir.resolve())})
    stamp = out_dir / ".done"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == source:
        log(f"{out_dir}: up to date")
        return len(read_kaldi_map(out_dir / "utt2spk"))

    names = ["wav.scp", "text", "utt2spk"] + (["utt2dur"] if (in_dir / "utt2dur").is_file() else [])
    src = {name: read_kaldi_map(in_dir / name) for name in names}
    out: dict[str, dict[str, str]] = {name: {} for name in names}
    jobs = []
    for factor in factors:
        f = float(factor)
        tag = "" if f == 1.0 else f"sp{factor}-"
        for utt, spec in src["wav.scp"].items():
            new = tag + utt
            if f == 1.0:
                out["wav.scp"][new] = spec
            else:
                if spec.rstrip().endswith("|"):
                    raise ValueError(f"{in_dir / 'wav.scp'}: {utt} is a pipe; speed perturbation needs audio files")
                dst = audio_dir / tag.rstrip("-") / src["utt2spk"][utt] / f"{new}.flac"
                out["wav.scp"][new] = str(dst.resolve())
                jobs.append((spec, str(dst), f))
            out["text"][new] = src["text"][utt]
            out["utt2spk"][new] = tag + src["utt2spk"][utt]
            if "utt2dur" in src:
                out["utt2dur"][new] = f"{float(src['utt2dur'][utt]) / f:.4f}"
    if jobs:
        log(f"writing {len(jobs)} perturbed utterances under {audio_dir} ({nj} jobs)")
        if nj > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(nj) as pool:
                pool.map(_make_one, jobs, chunksize=16)
        else:
            for job in jobs:
                _make_one(job)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for name, mapping in out.items():
        write_kaldi_map(out_dir / name, mapping)
    if "utt2dur" not in out:  # none from an earlier run with another input
        (out_dir / "utt2dur").unlink(missing_ok=True)
    write_kaldi_map(out_dir / "spk2utt", utt2spk_to_spk2utt(out["utt2spk"]))
    n = len(validate_data_dir(out_dir, optional=("utt2dur",)))
    atomic_write_text(stamp, source + "\n")
    log(f"{out_dir}: {n} utterances (factors {' '.join(factors)})")
    return n


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in_dir", type=Path, required=True)
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--factors", default="0.9 1.0 1.1", help="space- or comma-separated")
    parser.add_argument("--audio_dir", type=Path, required=True, help="where the perturbed flac files go")
    parser.add_argument("--nj", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        perturb_dir(args.in_dir, args.out_dir, parse_factors(args.factors), args.audio_dir, args.nj)
    except ValueError as exc:  # DataDirError is a ValueError
        log(f"ERROR: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
