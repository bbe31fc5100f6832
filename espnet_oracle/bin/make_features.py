"""Stage 2 (fbank | raw), one job's share of a wav.scp; exists because ESPnet has no stand-alone fbank dumper.

fbank: Kaldi-compatible log-mel (torchaudio.compliance.kaldi.fbank, no dither) -> <out_dir>/feats.JOB.scp
(kaldiio ark) + feats_shape.JOB. raw: wav.scp.JOB, the audio resampled to --fs only where it is not at --fs
(and written out for ``command |`` entries, which ESPnet's raw-audio reader does not run).
"""

import argparse
from pathlib import Path

import kaldiio
import numpy as np
import torch
import torchaudio
from espnet2.fileio.sound_scp import SoundScpReader, SoundScpWriter


def read_pipe(spec):
    """A ``command |`` entry (ESPnet's SoundScpReader runs no pipes): (rate, float32 (samples, channels)).
    With --feats_type raw its audio is written out, so that training reads files."""
    rate, wav = kaldiio.load_mat(spec)
    wav = np.asarray(wav)
    wav = wav.astype(np.float32) / 32768.0 if np.issubdtype(wav.dtype, np.integer) else wav.astype(np.float32)
    return rate, wav[:, None] if wav.ndim == 1 else wav


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--wav_scp", required=True)
    p.add_argument("--out_dir", required=True, type=Path)
    p.add_argument("--feats_type", choices=("fbank", "raw"), default="fbank")
    p.add_argument("--fs", type=int, default=16000)
    p.add_argument("--n_mels", type=int, default=80)
    p.add_argument("--job", type=int, default=1, help="this job's index, 1..nj")
    p.add_argument("--nj", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    reader = SoundScpReader(args.wav_scp, dtype="float32", always_2d=True)
    mine = np.array_split(list(reader.keys()), args.nj)[args.job - 1]
    out, j = args.out_dir, args.job
    (out / "data").mkdir(parents=True, exist_ok=True)
    if args.feats_type == "fbank":
        writer = kaldiio.WriteHelper(f"ark,scp:{out}/data/feats.{j}.ark,{out}/feats.{j}.scp.tmp")
        shapes = []
    else:
        writer = SoundScpWriter(out / "data", out / f"wav.{j}.scp.tmp", format="wav")
    with writer:
        for utt in mine:
            where = reader.get_path(utt)
            pipe = where.endswith("|")  # (the reader strips trailing blanks)
            rate, wav = read_pipe(where) if pipe else reader[utt]
            wav = torch.from_numpy(np.ascontiguousarray(wav.T[:1]))  # first channel, (1, samples)
            if args.feats_type == "raw" and rate == args.fs and not pipe:
                writer.fscp.write(f"{utt} {where}\n")  # as it is: no copy
                continue
            if rate != args.fs:
                wav = torchaudio.functional.resample(wav, rate, args.fs)
            if args.feats_type == "raw":
                writer[utt] = (args.fs, wav[0].numpy())
                continue
            feats = torchaudio.compliance.kaldi.fbank(
                wav * 32768.0, num_mel_bins=args.n_mels, sample_frequency=args.fs, dither=0.0
            ).numpy()
            writer[utt] = feats
            shapes.append(f"{utt} {feats.shape[0]},{feats.shape[1]}\n")
    name = "feats" if args.feats_type == "fbank" else "wav"
    Path(f"{out}/{name}.{j}.scp.tmp").replace(out / f"{name}.{j}.scp")
    if args.feats_type == "fbank":
        (out / f"feats_shape.{j}").write_text("".join(shapes), encoding="utf-8")


if __name__ == "__main__":
    main()
