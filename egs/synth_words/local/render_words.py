#!/usr/bin/env python3
"""Render synthetic word images (MJSynth-style) as Kaldi-style data dirs.

Usage (from the recipe dir)::

    python local/render_words.py --data_dir data --image_dir data/images --seed 1
    python local/render_words.py --data_dir data --num_train 2000 --num_dev 200 ...   # quick

Writes, for each set in ``--sets`` (default ``train dev test test_unseen_fonts``)::

    <data_dir>/<set>/img.scp   uttid <image_dir>/<set>/<uttid>.png   (RGB, height 32)
    <data_dir>/<set>/text      uttid word      (lower-case a-z0-9: the 36-symbol target)
    <data_dir>/<set>/utt2spk   uttid font family (e.g. DejaVuSerif)
    <data_dir>/<set>/spk2utt
    <data_dir>/<set>/utt2font  uttid font file and style drawn (for analysis)
    <data_dir>/<set>/.done     the options it was made with (a rerun with the same ones skips)

Strings: words of a real English word list (``--word_list``, default
``/usr/share/dict/words`` from Debian's ``wamerican``), numbers and mixed
alphanumerics (``A4``, ``b52``, ``2nd``, ``x7k9``), rendered lower-case,
Capitalised or UPPER (case is kept in the image, not in the transcript).

Splits:

- ``train``, ``dev``: training font families, training strings;
- ``test``: training font families, strings never used in training;
- ``test_unseen_fonts``: font families never used in training, strings never
  used in training (so ``test`` vs ``test_unseen_fonts`` isolates the font change).

Every transcript (lower-cased string) belongs to exactly one of two pools, chosen by
a hash of the seed and the transcript: ``--test_string_fraction`` of them are test
strings, the rest training strings; generated numbers and alphanumerics are
redrawn until they fall in the wanted pool. So no transcript of ``test`` or
``test_unseen_fonts`` can occur in ``train`` or ``dev``.

Appearance, drawn per image: font (family, then style file) and size; text and
background colour with a random contrast (either polarity); background flat,
gradient, texture or noise; sometimes extra letter spacing or an outline;
rotation, perspective, slight curvature; margins; then resized to height 32
(width proportional, at least ``--min_width_per_char`` pixels per character so
that a x4 width subsampling leaves >= 2 L + 1 frames for CTC); blur, pixel noise
and JPEG artefacts. Images are stored as PNG.

Determinism: each image is drawn from its own random generator seeded by
(``--seed``, set name, index), so the same options give byte-identical images
whatever ``--nj`` is (on the same Pillow/FreeType versions).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from str_common import filter_label, slug, write_image_data_dir  # noqa: E402

FORMAT_VERSION = 1
HEIGHT = 32
SETS = ("train", "dev", "test", "test_unseen_fonts")
#: defaults sized for the recipe's 45-minute CPU budget (see ../README.md)
DEFAULT_SIZES = {"train": 10000, "dev": 500, "test": 1000, "test_unseen_fonts": 1000}

#: Training font families (installed by local/install_fonts.sh; licences in README.md).
TRAIN_FONTS = (
    "DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono",
    "Liberation Sans", "Liberation Serif", "Liberation Mono",
    "FreeSans", "FreeSerif", "FreeMono",
    "Nimbus Sans", "Nimbus Roman", "Nimbus Mono PS", "Nimbus Sans Narrow",
)
#: Held-out families for test_unseen_fonts: designs unlike any training family
#: (geometric sans, and three serif book faces).
UNSEEN_FONTS = ("URW Gothic", "URW Bookman", "C059", "P052")

DEFAULT_FONT_DIRS = ("/usr/share/fonts", "~/.local/share/fonts", "fonts")
INSTALL_HINT = "run local/install_fonts.sh (or pass --font_dirs / --train_fonts / --unseen_fonts)"

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"


class RenderError(RuntimeError):
    """Bad options, missing fonts or word list."""


# --------------------------------------------------------------------------- #
# Fonts                                                                        #
# --------------------------------------------------------------------------- #
def discover_fonts(font_dirs: Sequence[str]) -> Dict[str, List[Tuple[str, str]]]:
    """Font family name -> sorted [(style, path)] of every .ttf/.otf under ``font_dirs``."""
    families: Dict[str, List[Tuple[str, str]]] = {}
    for d in font_dirs:
        root = Path(os.path.expanduser(d))
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in (".ttf", ".otf") or not path.is_file():
                continue
            try:
                family, style = ImageFont.truetype(str(path), 16).getname()
            except OSError:
                continue
            entries = families.setdefault(family, [])
            if style not in {s for s, _ in entries}:  # same font in two dirs: keep the first
                entries.append((style, str(path)))
    return {fam: sorted(v) for fam, v in sorted(families.items())}


def resolve_families(
    names: Sequence[str], available: Dict[str, List[Tuple[str, str]]], what: str
) -> List[Tuple[str, List[Tuple[str, str]]]]:
    # "DejaVuSans" names "DejaVu Sans" too (as in utt2spk; no quoting needed in run.sh options)
    squeezed = {n.replace(" ", ""): n for n in available}
    names = [n if n in available else squeezed.get(n.replace(" ", ""), n) for n in names]
    missing = [n for n in names if n not in available]
    if missing:
        raise RenderError(
            f"{what} font families not found: {', '.join(missing)}; {INSTALL_HINT}. "
            f"Available: {', '.join(available) or 'none'}"
        )
    return [(n, available[n]) for n in names]


@functools.lru_cache(maxsize=512)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# --------------------------------------------------------------------------- #
# Strings                                                                      #
# --------------------------------------------------------------------------- #
def read_word_list(path: str, max_length: int) -> List[str]:
    """ASCII-letter words (case kept) of 1..max_length letters, deduplicated, sorted."""
    p = Path(path)
    if not p.is_file():
        raise RenderError(f"word list {path} not found; {INSTALL_HINT} (Debian package wamerican)")
    words = set()
    with p.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            w = line.strip()
            if w.isascii() and w.isalpha() and 1 <= len(w) <= max_length:
                words.add(w)
    if not words:
        raise RenderError(f"word list {path} holds no words of ASCII letters")
    return sorted(words)


def is_test_string(transcript: str, seed: int, fraction: float) -> bool:
    """Which pool a transcript belongs to: a fixed hash of (seed, transcript)."""
    return zlib.crc32(f"{seed}:{transcript}".encode()) % 100000 < fraction * 100000


@dataclass
class StringPools:
    train_words: List[str]
    test_words: List[str]
    seed: int
    fraction: float
    max_length: int


def make_pools(words: Sequence[str], seed: int, fraction: float, max_length: int) -> StringPools:
    train, test = [], []
    for w in words:
        (test if is_test_string(filter_label(w), seed, fraction) else train).append(w)
    if not train or not test:
        raise RenderError(
            f"word list too small to split ({len(train)} training, {len(test)} test words)"
        )
    return StringPools(train, test, seed, fraction, max_length)


def apply_case(rng: np.random.Generator, s: str) -> str:
    r = rng.random()
    if r < 0.5:
        return s.lower()
    if r < 0.75:
        return s[:1].upper() + s[1:].lower()
    return s.upper()


def draw_number(rng: np.random.Generator, max_length: int) -> str:
    n = int(min(max_length, rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 8])))
    first = str(rng.integers(1, 10)) if n > 1 else str(rng.integers(0, 10))
    return first + "".join(DIGITS[i] for i in rng.integers(0, 10, n - 1))


def draw_alphanumeric(rng: np.random.Generator, max_length: int) -> str:
    def letters(k):
        return "".join(LETTERS[i] for i in rng.integers(0, 26, k))

    def digits(k):
        return "".join(DIGITS[i] for i in rng.integers(0, 10, k))

    kind = rng.integers(0, 4)
    if kind == 0:  # A4, bmw320
        s = letters(rng.integers(1, 4)) + digits(rng.integers(1, 4))
    elif kind == 1:  # 3rd, 4x4, 90s
        s = digits(rng.integers(1, 4)) + letters(rng.integers(1, 3))
    elif kind == 2:  # x7k9
        s = "".join(rng.choice(list(LETTERS + DIGITS)) for _ in range(rng.integers(3, 8)))
    else:  # covid19, mp3 - word-like prefix
        s = letters(rng.integers(2, 6)) + digits(rng.integers(1, 3))
    return s[:max_length]


def draw_string(rng: np.random.Generator, pools: StringPools, test: bool) -> str:
    """A rendered string (case kept) whose transcript lies in the test or training pool."""
    for _ in range(1000):
        r = rng.random()
        if r < 0.7:
            words = pools.test_words if test else pools.train_words
            w = words[int(rng.integers(0, len(words)))]
            # proper nouns keep their capital half the time
            return w if (not w.islower() and rng.random() < 0.5) else apply_case(rng, w)
        s = draw_number(rng, pools.max_length) if r < 0.85 else apply_case(
            rng, draw_alphanumeric(rng, pools.max_length)
        )
        if s and is_test_string(filter_label(s), pools.seed, pools.fraction) == test:
            return s
    raise RenderError("could not draw a string in the wanted pool")  # pragma: no cover


# --------------------------------------------------------------------------- #
# Rendering                                                                    #
# --------------------------------------------------------------------------- #
def luminance(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def draw_colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Background and text colours (RGB in [0, 1]) whose luminances differ by a random contrast."""
    bg = rng.random(3)
    fg = rng.random(3)
    contrast = rng.uniform(0.25, 0.85)
    lb, lf = luminance(bg), luminance(fg)
    if abs(lf - lb) < contrast:
        # move the text colour towards black or white, whichever is farther from the background
        target = np.zeros(3) if lb > 0.5 else np.ones(3)
        lt = luminance(target)
        t = min(1.0, (contrast - abs(lf - lb)) / max(abs(lt - lf), 1e-6))
        fg = fg * (1 - t) + target * t
    if rng.random() < 0.5:
        bg, fg = fg, bg  # either polarity
    return bg, fg


def make_background(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> Tuple[np.ndarray, str]:
    """(h, w, 3) float32 background and its kind."""
    kind = ("flat", "gradient", "texture", "noise")[int(rng.integers(0, 4))]
    base = np.broadcast_to(colour.astype(np.float32), (h, w, 3))
    if kind == "flat":
        return np.array(base), kind
    if kind == "gradient":
        other = np.clip(colour + rng.uniform(-0.35, 0.35, 3), 0, 1).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        proj = xx * np.cos(angle) + yy * np.sin(angle)
        proj = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
        return base * (1 - proj[..., None]) + other * proj[..., None], kind
    if kind == "texture":
        # smooth random field (low-resolution noise, upsampled) plus faint stripes
        cells = (max(2, h // int(rng.integers(4, 12))), max(2, w // int(rng.integers(4, 12))))
        field = rng.standard_normal(cells).astype(np.float32)
        field = np.asarray(
            Image.fromarray(field, mode="F").resize((w, h), Image.BICUBIC), dtype=np.float32
        )
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * rng.uniform(0.1, 0.6))
        tex = rng.uniform(0.04, 0.15) * field + rng.uniform(0.0, 0.06) * stripes
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        return np.clip(base + tex[..., None] * tint, 0, 1), kind
    sigma = rng.uniform(0.03, 0.15)
    return np.clip(base + sigma * rng.standard_normal((h, w, 3)).astype(np.float32), 0, 1), kind


def text_mask(rng: np.random.Generator, text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """'L' mask of the text (255 = ink), with optional extra letter spacing."""
    size = font.size
    ascent, descent = font.getmetrics()
    pad = size // 2
    spacing = rng.uniform(0.03, 0.3) * size if (len(text) > 1 and rng.random() < 0.25) else 0.0
    width = int(font.getlength(text) + spacing * (len(text) - 1)) + 2 * pad
    mask = Image.new("L", (width, ascent + descent + 2 * pad), 0)
    draw = ImageDraw.Draw(mask)
    if spacing == 0.0:
        draw.text((pad, pad), text, font=font, fill=255)
    else:
        x = float(pad)
        for ch in text:
            draw.text((x, pad), ch, font=font, fill=255)
            x += font.getlength(ch) + spacing
    return mask


def curve(rng: np.random.Generator, mask: np.ndarray, amount: float) -> np.ndarray:
    """Shift columns vertically along an arc (amount = sagitta in pixels, signed)."""
    h, w = mask.shape
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)
    dy = amount * (1.0 - x * x)  # arc: 0 at the ends, `amount` in the middle
    ys = np.arange(h, dtype=np.float32)[:, None] - dy[None, :]
    y0 = np.floor(ys).astype(np.int64)
    f = ys - y0
    cols = np.arange(w)[None, :]

    def at(yi):
        ok = (yi >= 0) & (yi < h)
        return np.where(ok, mask[np.clip(yi, 0, h - 1), cols], 0).astype(np.float32)

    return (at(y0) * (1 - f) + at(y0 + 1) * f).astype(np.float32)


def perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> Tuple[float, ...]:
    """Coefficients for Image.transform(PERSPECTIVE): output point dst_i samples input src_i."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64)))


def warp(rng: np.random.Generator, mask: Image.Image) -> Image.Image:
    """Slight curvature, rotation and perspective of the text mask."""
    w, h = mask.size
    if rng.random() < 0.3:
        arr = curve(rng, np.asarray(mask, dtype=np.float32), rng.uniform(-0.12, 0.12) * h)
        mask = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if rng.random() < 0.5:
        # output corners (the image frame) sample jittered input corners
        jx, jy = 0.06 * w, 0.12 * h
        dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        src = dst + np.column_stack([rng.uniform(-jx, jx, 4), rng.uniform(-jy, jy, 4)])
        mask = mask.transform((w, h), Image.PERSPECTIVE, perspective_coeffs(src, dst), Image.BILINEAR)
    angle = float(np.clip(rng.normal(0.0, 2.0), -6.0, 6.0))
    if abs(angle) > 0.2:
        mask = mask.rotate(angle, resample=Image.BILINEAR, expand=True)
    return mask


def render_image(
    rng: np.random.Generator, text: str, font_path: str, min_width_per_char: int
) -> Tuple[Image.Image, dict]:
    """One RGB word image of height 32 and the appearance drawn for it."""
    size = int(rng.integers(28, 60))
    font = load_font(font_path, size)
    stroke = int(rng.integers(1, 4)) if rng.random() < 0.08 else 0
    mask = warp(rng, text_mask(rng, text, font))
    bbox = mask.getbbox()
    if bbox is None:
        raise RenderError(f"font {font_path} draws nothing for {text!r}")
    mask = mask.crop(bbox)
    w, h = mask.size
    # margins around the ink (fractions of the ink height), then at least the minimum width
    top, bottom = (int(rng.uniform(0.02, 0.2) * h) + stroke for _ in range(2))
    left, right = (int(rng.uniform(0.0, 0.35) * h) + stroke for _ in range(2))
    full_h = h + top + bottom
    min_w = int(np.ceil((min_width_per_char * len(text) + 4) * full_h / HEIGHT))
    extra = max(0, min_w - (w + left + right))
    left += extra // 2
    right += extra - extra // 2
    full_w = w + left + right
    alpha = np.zeros((full_h, full_w), dtype=np.float32)
    alpha[top:top + h, left:left + w] = np.asarray(mask, dtype=np.float32) / 255.0

    bg_colour, fg_colour = draw_colours(rng)
    background, bg_kind = make_background(rng, full_h, full_w, bg_colour)
    if stroke:
        # outline in a third colour: the ink dilated by `stroke` pixels, under the text
        grown = Image.fromarray((alpha * 255).astype(np.uint8), mode="L").filter(
            ImageFilter.MaxFilter(2 * stroke + 1)
        )
        outline_alpha = np.asarray(grown, dtype=np.float32)[..., None] / 255.0
        outline = rng.random(3).astype(np.float32)
        background = background * (1 - outline_alpha) + outline * outline_alpha
    img = background * (1 - alpha[..., None]) + fg_colour.astype(np.float32) * alpha[..., None]
    img = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="RGB")

    out_w = max(1, int(round(full_w * HEIGHT / full_h)))
    img = img.resize((out_w, HEIGHT), Image.BILINEAR)
    blur = 0.0
    if rng.random() < 0.3:
        blur = float(rng.uniform(0.3, 1.1))
        img = img.filter(ImageFilter.GaussianBlur(blur))
    noise = 0.0
    if rng.random() < 0.2:
        noise = float(rng.uniform(2.0, 10.0))
        arr = np.asarray(img, dtype=np.float32) + noise * rng.standard_normal((HEIGHT, out_w, 3))
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    quality = 0
    if rng.random() < 0.4:
        quality = int(rng.integers(20, 90))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    meta = {"size": size, "background": bg_kind, "blur": round(blur, 2), "jpeg": quality}
    return img, meta


# --------------------------------------------------------------------------- #
# Sets                                                                         #
# --------------------------------------------------------------------------- #
@dataclass
class SetJob:
    name: str
    count: int
    families: List[Tuple[str, List[Tuple[str, str]]]]
    test_strings: bool


def image_rng(seed: int, set_name: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(set_name.encode()), index])


def render_one(args: Tuple) -> Tuple[str, str, str, str, str]:
    """Render image ``index`` of a set; returns (utt, path, transcript, speaker, font info)."""
    job, index, pools, seed, image_dir, min_width_per_char = args
    rng = image_rng(seed, job.name, index)
    family, styles = job.families[int(rng.integers(0, len(job.families)))]
    style, path = styles[int(rng.integers(0, len(styles)))]
    text = draw_string(rng, pools, job.test_strings)
    img, _ = render_image(rng, text, path, min_width_per_char)
    spk = slug(family)
    utt = f"{spk}-{job.name}-{index:06d}"
    out = Path(image_dir) / job.name / f"{utt}.png"
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    out.write_bytes(buf.getvalue())
    return utt, str(out), filter_label(text), spk, f"{Path(path).name}:{slug(style)}"


def set_options(args: argparse.Namespace, job: SetJob, words_sig: str) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "set": job.name,
        "count": job.count,
        "seed": args.seed,
        "families": [[f, [s for s, _ in styles]] for f, styles in job.families],
        "test_strings": job.test_strings,
        "test_string_fraction": args.test_string_fraction,
        "max_word_length": args.max_word_length,
        "min_width_per_char": args.min_width_per_char,
        "word_list": words_sig,
        "image_dir": str(args.image_dir),
    }


def render_set(args, job: SetJob, pools: StringPools, words_sig: str) -> bool:
    """Render one set unless its .done matches; returns whether it rendered."""
    out_dir = Path(args.data_dir) / job.name
    stamp = out_dir / ".done"
    opts = set_options(args, job, words_sig)
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == opts:
                print(f"render_words.py: {out_dir} is up to date", file=sys.stderr)
                return False
        except ValueError:
            pass
        stamp.unlink()
    (Path(args.image_dir) / job.name).mkdir(parents=True, exist_ok=True)
    tasks = [(job, i, pools, args.seed, str(args.image_dir), args.min_width_per_char)
             for i in range(1, job.count + 1)]
    if args.nj > 1:
        import multiprocessing as mp

        # spawn, not fork: safe also when the caller has imported torch (tests)
        with mp.get_context("spawn").Pool(args.nj) as pool:
            rows = pool.map(render_one, tasks, chunksize=64)
    else:
        rows = [render_one(t) for t in tasks]
    img = {u: p for u, p, _, _, _ in rows}
    text = {u: t for u, _, t, _, _ in rows}
    utt2spk = {u: s for u, _, _, s, _ in rows}
    utt2font = {u: f for u, _, _, _, f in rows}
    write_image_data_dir(out_dir, img, text, utt2spk, extra={"utt2font": utt2font})
    stamp.write_text(json.dumps(opts, indent=1) + "\n")
    print(f"render_words.py: {out_dir}: {job.count} images in {args.image_dir}/{job.name}",
          file=sys.stderr)
    return True


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Render synthetic word images as Kaldi-style data dirs (see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data_dir", default="data", help="writes <data_dir>/<set>/")
    p.add_argument("--image_dir", default=None, help="images go to <image_dir>/<set>/ (default <data_dir>/images)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    for name in SETS:
        p.add_argument(f"--num_{name}", type=int, default=DEFAULT_SIZES[name], help=f"images in {name}")
    p.add_argument("--word_list", default="/usr/share/dict/words", help="one word per line")
    p.add_argument("--max_word_length", type=int, default=12, help="longest string (characters)")
    p.add_argument("--test_string_fraction", type=float, default=0.1,
                   help="share of transcripts reserved for the test sets")
    p.add_argument("--min_width_per_char", type=int, default=9,
                   help="minimum image width per character at height 32 (x4 width subsampling "
                        "then gives >= 2 L + 1 frames)")
    p.add_argument("--font_dirs", nargs="+", default=list(DEFAULT_FONT_DIRS))
    p.add_argument("--train_fonts", default=",".join(TRAIN_FONTS), help="comma-separated family names (spaces optional: DejaVuSans = DejaVu Sans)")
    p.add_argument("--unseen_fonts", default=",".join(UNSEEN_FONTS),
                   help="comma-separated family names, never used for train/dev/test")
    p.add_argument("--nj", type=int, default=1, help="worker processes (results do not depend on it)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.image_dir is None:
        args.image_dir = str(Path(args.data_dir) / "images")
    train_names = [f.strip() for f in args.train_fonts.split(",") if f.strip()]
    unseen_names = [f.strip() for f in args.unseen_fonts.split(",") if f.strip()]
    both = sorted({n.replace(" ", "") for n in train_names} & {n.replace(" ", "") for n in unseen_names})
    if both:
        raise RenderError(f"font families both in --train_fonts and --unseen_fonts: {', '.join(both)}")
    if not 0.0 < args.test_string_fraction < 1.0:
        raise RenderError("--test_string_fraction must be in (0, 1)")
    if not train_names or ("test_unseen_fonts" in args.sets and not unseen_names):
        raise RenderError("need at least one training and one unseen font family")
    available = discover_fonts(args.font_dirs)
    train_fams = resolve_families(train_names, available, "training")
    unseen_fams = resolve_families(unseen_names, available, "unseen") if "test_unseen_fonts" in args.sets else []
    words = read_word_list(args.word_list, args.max_word_length)
    words_sig = f"{zlib.crc32(chr(10).join(words).encode()):08x}:{len(words)}"
    pools = make_pools(words, args.seed, args.test_string_fraction, args.max_word_length)
    jobs = {
        "train": SetJob("train", args.num_train, train_fams, False),
        "dev": SetJob("dev", args.num_dev, train_fams, False),
        "test": SetJob("test", args.num_test, train_fams, True),
        "test_unseen_fonts": SetJob("test_unseen_fonts", args.num_test_unseen_fonts, unseen_fams, True),
    }
    for name in args.sets:
        render_set(args, jobs[name], pools, words_sig)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RenderError as exc:
        print(f"render_words.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
