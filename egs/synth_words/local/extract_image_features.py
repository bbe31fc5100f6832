#!/usr/bin/env python3
"""``feats_type extracted`` for word images: each image as a sequence of pixel columns.

Usage (from the recipe dir)::

    python local/extract_image_features.py --data_dir data/train --out_dir dump/extracted/train
    python local/extract_image_features.py --data_dir data/test --out_dir dump/extracted/test \\
        --channels 3 --max_width 320

Each image of ``img.scp`` is converted to grey (``--channels 1``, ITU-R 601 luma;
``--channels 3`` keeps RGB), resized to height ``--height`` (32) with its aspect
ratio kept, at least ``--min_width`` and at most ``--max_width`` columns (a wider
image is squeezed to ``--max_width``, as the STR toolkits do), and stored as a
float32 matrix of shape ``(W, height * C)`` with values in [0, 1]: row ``w`` is
image column ``w``; its element ``c * height + y`` is channel ``c`` at row ``y``
(top to bottom). The CNN encoder (``encoder: crnn``) reshapes it back to
``(C, height, W)``. Frames are columns, so ESPnet's length/padding machinery
works as for speech, and global mean/variance statistics are per pixel row.

Output layout (``out_dir``, as ``espnet_oracle.bin.compute_fbank`` writes it)::

    data/feats.ark   feats.scp   uttid out_dir/data/feats.ark:<offset>   (sorted)
    feats_shape      uttid W,<height * C>      (ESPnet shape-file format)
    utt2num_frames   uttid W
    text utt2spk spk2utt                       (copied)
    .done            JSON: options, inputs fingerprint, counts

A rerun whose ``.done`` matches the options and inputs (data-dir files and the
size/mtime of every image) does nothing. An unreadable image stops the run with
an error naming the utterance and the file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from espnet_oracle.utils.datadir import (
    atomic_copy,
    atomic_write_text,
    read_kaldi_map,
    utt2spk_to_spk2utt,
    write_kaldi_map,
)

FORMAT_VERSION = 1
COPY_FILES = ("text", "utt2spk", "spk2utt")


class ImageFeatureError(RuntimeError):
    """An image that cannot be read, or a malformed data dir."""


def image_to_columns(
    img: Image.Image, height: int = 32, channels: int = 1, max_width: int = 256, min_width: int = 8
) -> np.ndarray:
    """(W, height * channels) float32 in [0, 1]: the image's columns, resized to ``height``.

    ``W = clip(round(width * height / image_height), min_width, max_width)``.
    """
    img = img.convert("L" if channels == 1 else "RGB")
    w = int(round(img.width * height / img.height))
    w = min(max(w, min_width), max_width)
    img = img.resize((w, height), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, C)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    # (H, W, C) -> (W, C, H) -> (W, C*H): element c*H + y
    return np.ascontiguousarray(arr.transpose(1, 2, 0).reshape(w, channels * height))


def load_image(utt: str, path: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as exc:
        raise ImageFeatureError(f"utterance {utt}: image {path} does not exist") from exc
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageFeatureError(f"utterance {utt}: cannot read image {path}: {exc}") from exc
    if img.width < 1 or img.height < 1:
        raise ImageFeatureError(f"utterance {utt}: image {path} is empty ({img.width}x{img.height})")
    return img


def feature_options(args: argparse.Namespace) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "feature": "image_columns",
        "height": args.height,
        "channels": args.channels,
        "max_width": args.max_width,
        "min_width": args.min_width,
        "resample": "bilinear",
        "scale": "1/255",
    }


def inputs_fingerprint(data_dir: Path, img_scp: Dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in ("img.scp",) + COPY_FILES:
        p = data_dir / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    for utt, path in img_scp.items():
        try:
            st = os.stat(path)
            h.update(f"{utt}\t{path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{utt}\t{path}\tmissing\n".encode())
    return h.hexdigest()


def extract(args: argparse.Namespace) -> bool:
    """Write the features of ``args.data_dir`` to ``args.out_dir``; False if up to date."""
    import kaldiio

    data_dir, out_dir = Path(args.data_dir), Path(args.out_dir)
    if not (data_dir / "img.scp").is_file():
        raise ImageFeatureError(f"{data_dir}/img.scp: no such file (run the data stage first)")
    img_scp = read_kaldi_map(data_dir / "img.scp", allow_empty_value=False)
    img_scp = {k: img_scp[k] for k in sorted(img_scp)}
    opts = feature_options(args)
    fingerprint = inputs_fingerprint(data_dir, img_scp)
    stamp = out_dir / ".done"
    if stamp.is_file():
        try:
            done = json.loads(stamp.read_text())
            if done.get("options") == opts and done.get("inputs") == fingerprint:
                return False
        except ValueError:
            pass
        stamp.unlink()

    ark = out_dir / "data" / "feats.ark"
    ark.parent.mkdir(parents=True, exist_ok=True)
    tmp_ark = ark.with_name(f".{ark.name}.{os.getpid()}.tmp")
    scp, frames = {}, {}
    squeezed = 0
    try:
        with open(tmp_ark, "wb") as fark:
            for utt, path in img_scp.items():
                img = load_image(utt, path)
                natural = int(round(img.width * args.height / img.height))
                squeezed += natural > args.max_width
                feats = image_to_columns(img, args.height, args.channels, args.max_width, args.min_width)
                buf = io.StringIO()
                kaldiio.save_ark(fark, {utt: feats}, scp=buf)
                offset = buf.getvalue().strip().rsplit(":", 1)[1]
                scp[utt] = f"{ark}:{offset}"
                frames[utt] = feats.shape[0]
        os.replace(tmp_ark, ark)
    except BaseException:
        if tmp_ark.exists():
            tmp_ark.unlink()
        raise
    dim = args.height * args.channels
    write_kaldi_map(out_dir / "feats.scp", scp)
    write_kaldi_map(out_dir / "utt2num_frames", frames)
    write_kaldi_map(out_dir / "feats_shape", {k: f"{v},{dim}" for k, v in frames.items()})
    for name in COPY_FILES:
        if (data_dir / name).is_file():
            atomic_copy(data_dir / name, out_dir / name)
        elif name == "spk2utt" and (data_dir / "utt2spk").is_file():
            write_kaldi_map(out_dir / name, utt2spk_to_spk2utt(read_kaldi_map(data_dir / "utt2spk")))
    done = {"options": opts, "inputs": fingerprint, "num_utts": len(scp), "squeezed_to_max_width": squeezed,
            "data_dir": str(data_dir)}
    atomic_write_text(stamp, json.dumps(done, indent=1, sort_keys=True) + "\n")
    print(f"extract_image_features.py: {out_dir}: {len(scp)} images, dim {dim}"
          f" ({squeezed} squeezed to {args.max_width} columns)", file=sys.stderr)
    return True


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Word images -> (W, height*C) column features (kaldiio ark/scp + feats_shape).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data_dir", required=True, help="data dir with img.scp (text, utt2spk copied)")
    p.add_argument("--out_dir", required=True, help="e.g. dump/extracted/train")
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1: grey, 3: RGB")
    p.add_argument("--max_width", type=int, default=256, help="wider images are squeezed to this")
    p.add_argument("--min_width", type=int, default=8, help="narrower images are stretched to this")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.min_width < 1 or args.max_width < args.min_width:
        raise ImageFeatureError("need 1 <= --min_width <= --max_width")
    if not extract(args):
        print(f"extract_image_features.py: {args.out_dir} is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImageFeatureError as exc:
        print(f"extract_image_features.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
