"""Stage 2: log-mel filterbank features for a Kaldi-style data directory.

Usage (from the recipe root)::

    # everything in one go, N worker processes, progress bar on stderr
    python -m espnet_oracle.bin.compute_fbank --data_dir data/train \\
        --out_dir dump/fbank/train --nj 2

    # or slice by slice (e.g. one cluster task per slice), then merge
    python -m espnet_oracle.bin.compute_fbank --data_dir data/train \\
        --out_dir dump/fbank/train --job 3 --num_jobs 8
    python -m espnet_oracle.bin.compute_fbank --data_dir data/train \\
        --out_dir dump/fbank/train --merge --num_jobs 8

Features are Kaldi-compatible fbanks computed by
``torchaudio.compliance.kaldi.fbank`` (povey window, snip_edges, no dither,
waveform in 16-bit integer scale as Kaldi reads it), so the output is
deterministic: ``T = 1 + (num_samples - window) // shift`` frames of
``num_mel_bins`` float32 values per utterance.

Output layout (``out_dir``)::

    data/feats.<J>.ark  data/feats.<J>.scp  data/utt2num_frames.<J>  data/.done.<J>
    feats.scp           uttid out_dir/data/feats.<J>.ark:<offset>   (sorted)
    feats_shape         uttid T,<num_mel_bins>      (ESPnet shape-file format)
    utt2num_frames      uttid T
    text utt2spk spk2utt [utt2snr utt2noise word_align utt2dur]   (copied)
    .done               JSON: feature options + fingerprint of the inputs

Every file is written atomically (temporary file + rename).  A run whose
``.done`` matches the options and the current inputs (data-dir files, and
size/mtime of every audio file) does nothing; per-slice ``.done.<J>`` files
make an interrupted run resume with the slices that are still missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from espnet_oracle.utils.datadir import (
    DataDirError,
    atomic_copy,
    atomic_write_text,
    file_sha256,
    read_kaldi_map,
    split_keys,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_kaldi_map,
)

FORMAT_VERSION = 1
REQUIRED_FILES = ("wav.scp", "text", "utt2spk")
#: Per-utterance metadata copied into the dump dir so it is self-contained.
COPY_FILES = ("text", "utt2spk", "spk2utt", "utt2snr", "utt2noise", "word_align", "utt2dur")
#: Kaldi reads 16-bit PCM as integers; soundfile gives floats in [-1, 1).
WAVEFORM_SCALE = 32768.0


class FeatureError(RuntimeError):
    """Audio that cannot be turned into features (unreadable, wrong rate, too short...)."""


# --------------------------------------------------------------------------- #
# Feature computation                                                         #
# --------------------------------------------------------------------------- #
def feature_options(args: argparse.Namespace) -> dict:
    """Everything that determines the feature values (goes into the .done stamps)."""
    return {
        "format_version": FORMAT_VERSION,
        "feature": "fbank",
        "num_mel_bins": int(args.num_mel_bins),
        "sample_rate": int(args.sample_rate),
        "frame_length_ms": float(args.frame_length),
        "frame_shift_ms": float(args.frame_shift),
        "dither": 0.0,
        "window_type": "povey",
        "snip_edges": True,
        "waveform_scale": WAVEFORM_SCALE,
    }


def _window_samples(opts: dict) -> tuple[int, int]:
    sr = opts["sample_rate"]
    return int(sr * opts["frame_length_ms"] * 0.001), int(sr * opts["frame_shift_ms"] * 0.001)


def expected_num_frames(num_samples: int, opts: dict) -> int:
    """Number of frames produced for ``num_samples`` samples (snip_edges=True)."""
    window, shift = _window_samples(opts)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def _is_pipe(spec: str) -> bool:
    spec = spec.strip()
    return spec.endswith("|") or spec.startswith("|")


def read_waveform(utt: str, spec: str, sample_rate: int):
    """Read one wav.scp entry as a 1-D float32 array in 16-bit integer scale."""
    import numpy as np

    try:
        if _is_pipe(spec):
            import kaldiio

            rate, array = kaldiio.load_mat(spec)
            array = np.asarray(array)
            if np.issubdtype(array.dtype, np.floating):
                array = array.astype(np.float32) * WAVEFORM_SCALE
            else:
                array = array.astype(np.float32)
            if array.ndim == 1:
                array = array[:, None]
        else:
            import soundfile

            array, rate = soundfile.read(spec, dtype="float32", always_2d=True)
            array = array * np.float32(WAVEFORM_SCALE)
    except Exception as exc:  # soundfile/kaldiio raise many different types
        raise FeatureError(f"utterance {utt}: cannot read audio {spec!r}: {exc}") from exc
    if rate != sample_rate:
        raise FeatureError(
            f"utterance {utt}: audio {spec!r} has sample rate {rate} Hz, expected {sample_rate} Hz"
        )
    if array.shape[1] != 1:
        raise FeatureError(
            f"utterance {utt}: audio {spec!r} has {array.shape[1]} channels, expected mono"
        )
    return np.ascontiguousarray(array[:, 0])


def compute_features(utt: str, spec: str, waveform, opts: dict):
    """Fbank matrix (T, num_mel_bins) float32 for one waveform."""
    import torch
    from torchaudio.compliance import kaldi

    window, _ = _window_samples(opts)
    if waveform.shape[0] < window:
        raise FeatureError(
            f"utterance {utt}: audio {spec!r} has {waveform.shape[0]} samples, "
            f"shorter than one {opts['frame_length_ms']} ms window ({window} samples)"
        )
    with torch.no_grad():
        feats = kaldi.fbank(
            torch.from_numpy(waveform).unsqueeze(0),
            num_mel_bins=opts["num_mel_bins"],
            frame_length=opts["frame_length_ms"],
            frame_shift=opts["frame_shift_ms"],
            dither=0.0,
            window_type=opts["window_type"],
            snip_edges=opts["snip_edges"],
            sample_frequency=float(opts["sample_rate"]),
        )
    return feats.numpy().astype("float32", copy=False)


# --------------------------------------------------------------------------- #
# Fingerprints / stamps                                                       #
# --------------------------------------------------------------------------- #
def _audio_signature(utt: str, spec: str) -> str:
    if _is_pipe(spec):
        return f"{utt}\t{spec}"
    try:
        st = os.stat(spec)
    except OSError as exc:
        raise FeatureError(f"utterance {utt}: cannot read audio {spec!r}: {exc.strerror}") from exc
    return f"{utt}\t{spec}\t{st.st_size}\t{st.st_mtime_ns}"


def job_fingerprint(wav: dict[str, str], keys: list[str], job: int, num_jobs: int, opts: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"options": opts, "job": job, "num_jobs": num_jobs}, sort_keys=True).encode())
    for utt in keys:
        h.update((_audio_signature(utt, wav[utt]) + "\n").encode("utf-8"))
    return h.hexdigest()


def dir_fingerprint(data_dir: Path, wav: dict[str, str], opts: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"options": opts}, sort_keys=True).encode())
    for name in ("wav.scp",) + COPY_FILES:
        if (data_dir / name).is_file():
            h.update(f"{name}\t{file_sha256(data_dir / name)}\n".encode())
    for utt in sorted(wav):
        h.update((_audio_signature(utt, wav[utt]) + "\n").encode("utf-8"))
    return h.hexdigest()


def _read_stamp(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _job_paths(out_dir: Path, job: int) -> dict[str, Path]:
    d = out_dir / "data"
    return {
        "ark": d / f"feats.{job}.ark",
        "scp": d / f"feats.{job}.scp",
        "frames": d / f"utt2num_frames.{job}",
        "stamp": d / f".done.{job}",
    }


def _job_is_done(paths: dict[str, Path], fingerprint: str) -> bool:
    stamp = _read_stamp(paths["stamp"])
    return (
        stamp is not None
        and stamp.get("fingerprint") == fingerprint
        and all(paths[k].is_file() for k in ("ark", "scp", "frames"))
    )


# --------------------------------------------------------------------------- #
# One slice                                                                   #
# --------------------------------------------------------------------------- #
def run_job(
    data_dir: Path,
    out_dir: Path,
    job: int,
    num_jobs: int,
    opts: dict,
    wav: Optional[dict[str, str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> bool:
    """Compute slice ``job`` (1-based) of ``num_jobs``.  Returns False if it was up to date."""
    import io

    import kaldiio

    if wav is None:
        wav = read_kaldi_map(data_dir / "wav.scp")
    keys = split_keys(sorted(wav), num_jobs)[job - 1]
    paths = _job_paths(out_dir, job)
    fingerprint = job_fingerprint(wav, keys, job, num_jobs, opts)
    if _job_is_done(paths, fingerprint):
        if progress:
            progress(len(keys))
        return False

    _remove(paths["stamp"])
    paths["ark"].parent.mkdir(parents=True, exist_ok=True)
    tmp_ark = paths["ark"].with_name(f".{paths['ark'].name}.{os.getpid()}.tmp")
    final_ark = str(paths["ark"])
    scp_lines, frame_lines = [], []
    try:
        with open(tmp_ark, "wb") as fark:
            for utt in keys:
                waveform = read_waveform(utt, wav[utt], opts["sample_rate"])
                feats = compute_features(utt, wav[utt], waveform, opts)
                buf = io.StringIO()
                kaldiio.save_ark(fark, {utt: feats}, scp=buf)
                # kaldiio names the ark by the (temporary) file's name; keep its offset only.
                offset = buf.getvalue().strip().rsplit(":", 1)[1]
                scp_lines.append(f"{utt} {final_ark}:{offset}\n")
                frame_lines.append(f"{utt} {feats.shape[0]}\n")
                if progress:
                    progress(1)
        os.replace(tmp_ark, paths["ark"])
    except BaseException:
        _remove(tmp_ark)
        raise
    atomic_write_text(paths["scp"], "".join(scp_lines))
    atomic_write_text(paths["frames"], "".join(frame_lines))
    atomic_write_text(paths["stamp"], json.dumps({"fingerprint": fingerprint, "options": opts}) + "\n")
    return True


def _worker(data_dir, out_dir, job, num_jobs, opts, queue) -> None:
    """Process entry point for ``--nj``: one slice, progress and errors reported via ``queue``."""
    try:
        import torch

        torch.set_num_threads(1)
        pending = [0, time.monotonic()]

        def progress(n: int) -> None:
            pending[0] += n
            now = time.monotonic()
            if now - pending[1] > 0.1:
                queue.put(("progress", job, pending[0]))
                pending[0], pending[1] = 0, now

        run_job(Path(data_dir), Path(out_dir), job, num_jobs, opts, progress=progress)
        if pending[0]:
            queue.put(("progress", job, pending[0]))
        queue.put(("done", job, None))
    except BaseException as exc:  # report everything, including KeyboardInterrupt
        message = str(exc) if isinstance(exc, (FeatureError, DataDirError)) else f"{type(exc).__name__}: {exc}"
        queue.put(("done", job, message))


def _run_parallel(data_dir: Path, out_dir: Path, num_jobs: int, opts: dict, total: int) -> None:
    import multiprocessing as mp
    import queue as queue_mod

    from tqdm import tqdm

    ctx = mp.get_context("spawn")  # no fork after torch's thread pools exist
    q = ctx.Queue()
    procs = {
        j: ctx.Process(
            target=_worker, args=(str(data_dir), str(out_dir), j, num_jobs, opts, q), daemon=True
        )
        for j in range(1, num_jobs + 1)
    }
    for p in procs.values():
        p.start()
    pending = set(procs)
    error: Optional[str] = None
    try:
        with tqdm(total=total, desc=f"fbank {data_dir}", unit="utt", file=sys.stderr,
                  mininterval=1.0, dynamic_ncols=True) as bar:
            while pending:
                try:
                    kind, job, payload = q.get(timeout=1.0)
                except queue_mod.Empty:
                    for j in list(pending):
                        if not procs[j].is_alive() and q.empty():
                            time.sleep(0.5)  # let a just-finished worker's last message arrive
                            if q.empty():
                                error = f"job {j}/{num_jobs} died (exit code {procs[j].exitcode})"
                                pending.clear()
                                break
                    continue
                if kind == "progress":
                    bar.update(payload)
                else:
                    pending.discard(job)
                    if payload is not None:
                        error = f"job {job}/{num_jobs}: {payload}"
                        break
    finally:
        for p in procs.values():
            if error is not None and p.is_alive():
                p.terminate()
            p.join()
    if error is not None:
        raise FeatureError(error)


# --------------------------------------------------------------------------- #
# Merge                                                                       #
# --------------------------------------------------------------------------- #
def merge(data_dir: Path, out_dir: Path, num_jobs: int, opts: dict, wav: dict[str, str], fingerprint: str) -> int:
    """Combine the slices into the final files, copy metadata, write ``.done``. Returns #utts."""
    keys = sorted(wav)
    feats_scp: dict[str, str] = {}
    num_frames: dict[str, str] = {}
    for job, job_keys in enumerate(split_keys(keys, num_jobs), 1):
        paths = _job_paths(out_dir, job)
        if not _job_is_done(paths, job_fingerprint(wav, job_keys, job, num_jobs, opts)):
            raise FeatureError(
                f"{out_dir}: output of job {job}/{num_jobs} is missing or stale; run "
                f"`--job {job} --num_jobs {num_jobs}` first"
            )
        scp = read_kaldi_map(paths["scp"], allow_empty_value=False)
        frames = read_kaldi_map(paths["frames"], allow_empty_value=False)
        if list(scp) != job_keys or list(frames) != job_keys:
            raise FeatureError(f"{paths['scp']}: does not hold the utterances of job {job}/{num_jobs}")
        feats_scp.update(scp)
        num_frames.update(frames)

    dim = opts["num_mel_bins"]
    write_kaldi_map(out_dir / "feats.scp", feats_scp)
    write_kaldi_map(out_dir / "utt2num_frames", num_frames)
    write_kaldi_map(out_dir / "feats_shape", {k: f"{v},{dim}" for k, v in num_frames.items()})
    for name in COPY_FILES:
        if (data_dir / name).is_file():
            atomic_copy(data_dir / name, out_dir / name)
        elif name == "spk2utt":
            write_kaldi_map(out_dir / name, utt2spk_to_spk2utt(read_kaldi_map(data_dir / "utt2spk")))
        else:
            _remove(out_dir / name)  # don't leave a stale copy from an older data dir

    # Slices of an earlier run with more jobs.
    wanted = {f"{stem}.{j}" for j in range(1, num_jobs + 1) for stem in ("feats", "utt2num_frames", ".done")}
    for p in (out_dir / "data").iterdir():
        stem_job = p.name.rsplit(".", 1)[0] if p.name.endswith((".ark", ".scp")) else p.name
        if stem_job.rsplit(".", 1)[-1].isdigit() and stem_job not in wanted:
            _remove(p)

    stamp = {"options": opts, "inputs": fingerprint, "num_utts": len(keys), "data_dir": str(data_dir)}
    atomic_write_text(out_dir / ".done", json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return len(keys)


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_oracle.bin.compute_fbank",
        description="Compute Kaldi-compatible log-mel fbank features for a data dir (ESPnet dump layout).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data_dir", required=True, help="Kaldi-style data dir (wav.scp, text, utt2spk)")
    parser.add_argument("--out_dir", required=True, help="dump dir to write, e.g. dump/fbank/train")
    parser.add_argument("--nj", type=int, default=1, help="number of worker processes")
    parser.add_argument("--job", type=int, default=None, help="compute only slice J (1-based) of --num_jobs")
    parser.add_argument("--num_jobs", type=int, default=None, help="number of slices for --job/--merge")
    parser.add_argument("--merge", action="store_true", help="merge the --num_jobs slices")
    parser.add_argument("--num_mel_bins", type=int, default=80)
    parser.add_argument("--sample_rate", type=int, default=16000, help="expected audio sample rate")
    parser.add_argument("--frame_length", type=float, default=25.0, help="window length in ms")
    parser.add_argument("--frame_shift", type=float, default=10.0, help="frame shift in ms")
    parser.add_argument("--force", action="store_true", help="recompute even if up to date")
    return parser


def _log(msg: str) -> None:
    print(f"compute_fbank: {msg}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.job is not None and args.merge:
        parser.error("--job and --merge are exclusive")
    if (args.job is not None or args.merge) and args.num_jobs is None:
        parser.error("--job and --merge need --num_jobs")
    if args.num_jobs is not None and args.num_jobs < 1:
        parser.error("--num_jobs must be >= 1")
    if args.job is not None and not 1 <= args.job <= args.num_jobs:
        parser.error(f"--job must be in 1..{args.num_jobs}")
    if args.nj < 1:
        parser.error("--nj must be >= 1")

    data_dir, out_dir = Path(args.data_dir), Path(args.out_dir)
    opts = feature_options(args)
    keys = validate_data_dir(data_dir, required=REQUIRED_FILES)
    wav = read_kaldi_map(data_dir / "wav.scp", allow_empty_value=False)
    fingerprint = dir_fingerprint(data_dir, wav, opts)  # also checks every audio file exists

    stamp = _read_stamp(out_dir / ".done")
    up_to_date = (
        not args.force
        and stamp is not None
        and stamp.get("options") == opts
        and stamp.get("inputs") == fingerprint
        and all((out_dir / n).is_file() for n in ("feats.scp", "feats_shape", "utt2num_frames"))
    )

    if args.job is not None:
        if up_to_date:
            _log(f"{out_dir} is up to date; nothing to do for job {args.job}")
            return 0
        if args.force:
            _remove(_job_paths(out_dir, args.job)["stamp"])
        run_job(data_dir, out_dir, args.job, args.num_jobs, opts, wav=wav)
        return 0

    if up_to_date:
        _log(f"{out_dir} is up to date ({len(keys)} utterances); skipping")
        return 0
    _remove(out_dir / ".done")

    if args.merge:
        n = merge(data_dir, out_dir, args.num_jobs, opts, wav, fingerprint)
        _log(f"merged {args.num_jobs} slices: {n} utterances -> {out_dir}/feats.scp")
        return 0

    num_jobs = max(1, min(args.nj, len(keys)))
    if args.force:
        for j in range(1, num_jobs + 1):
            _remove(_job_paths(out_dir, j)["stamp"])
    start = time.time()
    if num_jobs == 1:
        from tqdm import tqdm

        with tqdm(total=len(keys), desc=f"fbank {data_dir}", unit="utt", file=sys.stderr,
                  mininterval=1.0, dynamic_ncols=True) as bar:
            run_job(data_dir, out_dir, 1, 1, opts, wav=wav, progress=bar.update)
    else:
        _run_parallel(data_dir, out_dir, num_jobs, opts, total=len(keys))
    n = merge(data_dir, out_dir, num_jobs, opts, wav, fingerprint)
    _log(f"{n} utterances -> {out_dir}/feats.scp ({num_jobs} jobs, {time.time() - start:.1f} s)")
    return 0


def cli() -> int:
    try:
        return main()
    except (DataDirError, FeatureError) as exc:
        print(f"compute_fbank: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
