#!/usr/bin/env python3
"""Build a small sentence-level English speech corpus with an offline speech synthesiser (espeak-ng).

Text: the example sentences of WordNet 3.0 (Debian package ``wordnet-base``, files
``/usr/share/wordnet/data.{noun,verb,adj,adv}``; the quoted examples inside the glosses), or any
file of one sentence a line (``--text_file``). Sentences are normalised to upper-case letters,
apostrophe and space; those with digits or other symbols are dropped, and only sentences of
``--min_words``..``--max_words`` words are kept (duplicates removed).

Voices: espeak-ng's English accents (``en``, ``en-us``, ``en-gb-scotland``, ...) x voice variants
(``+m1`` .. ``+f5``, ``+klatt`` ...); a voice is one accent+variant pair and is the utterance's
speaker. ``--unseen_variants`` are never used in train/dev/test: ``test_unseen`` uses only them
(all accents), so its voices are unseen in training.

Per utterance (deterministic for ``--seed``, independent of ``--nj``): a random voice of its set,
speed (words per minute), pitch, amplitude and word gap; the synthesiser's output is resampled to
``--fs`` (16 kHz by default) and, except for a ``--clean_fraction`` share, white/pink/brown noise is
added at an SNR drawn from ``--snrs`` (measured over the speech frames).

Sets: ``dev``, ``test``, ``test_unseen`` and ``train`` get disjoint sentences (split after one
seeded shuffle of the unique sentences). Kaldi data dirs under ``--data_dir``: ``wav.scp``, ``text``,
``utt2spk`` (voice), ``spk2utt``, ``utt2dur``, ``utt2snr``, ``utt2noise``, ``utt2synth`` (voice,
speed, pitch, amplitude, gap), sorted by utterance id; audio in ``<data_dir>/<set>/wav/``.
A set whose ``.done`` holds the same options is skipped.

``--synth_cmd`` replaces ``espeak-ng`` (tests use a fake synthesiser); it is called as
``<synth_cmd> -v VOICE -s WPM -p PITCH -a AMP -g GAP -w OUT.wav TEXT`` and must write a wav file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

FORMAT_VERSION = 1
SETS = ("dev", "test", "test_unseen", "train")  # split order of the shuffled sentences
SET_INDEX = {name: i for i, name in enumerate(SETS)}
DEFAULT_SIZES = {"train": 2400, "dev": 200, "test": 300, "test_unseen": 300}
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "klatt6")
DEFAULT_UNSEEN = ("m5", "f4", "klatt3")
SNRS = (25, 20, 15, 10, 5)
NOISES = ("white", "pink", "brown")
WORDNET_DIR = "/usr/share/wordnet"


class DataPrepError(RuntimeError):
    pass


# --------------------------------------------------------------------------- text
def normalise(sentence: str) -> str | None:
    """Upper-case words of letters and apostrophes, or None if the sentence has other symbols."""
    s = sentence.strip()
    if not s or re.search(r"[^A-Za-z' ,.;:!?\-]", s):
        return None
    s = re.sub(r"[,.;:!?\-]", " ", s).upper()
    words = [w.strip("'") for w in s.split()]
    words = [w for w in words if w]
    if any(not re.fullmatch(r"[A-Z]+('[A-Z]+)*", w) for w in words):
        return None
    return " ".join(words)


def wordnet_examples(wordnet_dir: str = WORDNET_DIR) -> list[str]:
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(wordnet_dir) / f"data.{pos}"
        if not path.is_file():
            raise DataPrepError(f"WordNet data file {path} not found: install the Debian package "
                                "wordnet-base (local/install_espeak.sh does) or pass --text_file")
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                _, bar, gloss = line.partition("|")
                if bar:
                    out += re.findall(r'"([^"]+)"', gloss)
    return out


def load_sentences(text_file: str | None, min_words: int, max_words: int,
                   wordnet_dir: str = WORDNET_DIR) -> list[str]:
    """Unique normalised sentences of min..max words, sorted (the order does not depend on the source's)."""
    if text_file:
        raw = Path(text_file).read_text(encoding="utf-8").splitlines()
    else:
        raw = wordnet_examples(wordnet_dir)
    keep = set()
    for s in raw:
        n = normalise(s)
        if n and min_words <= len(n.split()) <= max_words:
            keep.add(n)
    return sorted(keep)


def split_sentences(sentences: list[str], sizes: dict, seed: int) -> dict[str, list[str]]:
    need = sum(sizes[s] for s in SETS)
    if need > len(sentences):
        raise DataPrepError(f"need {need} sentences for the sets {sizes}, the text source has "
                            f"{len(sentences)} usable ones")
    order = np.random.default_rng([seed, 1000]).permutation(len(sentences))
    out, start = {}, 0
    for name in SETS:
        out[name] = [sentences[i] for i in order[start:start + sizes[name]]]
        start += sizes[name]
    return out


# --------------------------------------------------------------------------- voices and plans
def voice_pool(set_name: str, unseen_variants) -> list[str]:
    unseen = set(unseen_variants)
    bad = unseen - set(VARIANTS)
    if bad:
        raise DataPrepError(f"unknown voice variant(s) {sorted(bad)}; choose from {list(VARIANTS)}")
    variants = [v for v in VARIANTS if (v in unseen) == (set_name == "test_unseen")]
    if not variants:
        raise DataPrepError(f"no voice variant left for {set_name}")
    return [f"{a}+{v}" for a in ACCENTS for v in variants]


def voice_id(voice: str) -> str:
    return voice.replace("+", "_")


def plan_utterance(set_name: str, index: int, sentence: str, seed: int, pool: list[str],
                   snrs, clean_fraction: float) -> dict:
    rng = np.random.default_rng([seed, SET_INDEX[set_name], index])
    voice = pool[int(rng.integers(len(pool)))]
    plan = {
        "utt": f"{voice_id(voice)}-{set_name}{index:05d}",
        "set": set_name, "index": index, "text": sentence, "voice": voice,
        "speed": int(rng.integers(130, 211)),      # words per minute (espeak-ng default 175)
        "pitch": int(rng.integers(20, 81)),        # 0-99 (default 50)
        "amplitude": int(rng.integers(60, 161)),   # 0-200 (default 100)
        "gap": int(rng.integers(0, 4)),            # extra pause between words, x 10 ms
        "noise_seed": int(rng.integers(2**31)),
    }
    if rng.random() < clean_fraction:
        plan["noise"], plan["snr"] = "none", None
    else:
        plan["noise"] = NOISES[int(rng.integers(len(NOISES)))]
        plan["snr"] = int(snrs[int(rng.integers(len(snrs)))])
    return plan


# --------------------------------------------------------------------------- audio
def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec = spec / (np.sqrt(f) if kind == "pink" else f)  # 1/f resp. 1/f^2 power
        x = np.fft.irfft(spec, n)
    x = x - x.mean()
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def speech_power(x: np.ndarray, fs: int) -> float:
    """Mean power over 20 ms frames within 30 dB of the loudest one (the speech, not the pauses)."""
    hop = max(1, fs // 50)
    n = len(x) // hop
    if n == 0:
        return float(np.mean(x ** 2) + 1e-12)
    e = np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1)
    active = e[e >= e.max() * 1e-3]
    return float(active.mean() + 1e-12)


def synthesise(plan: dict, synth_cmd: list[str], fs: int, tmp_dir: str) -> np.ndarray:
    out = os.path.join(tmp_dir, f"{plan['utt']}.wav")
    cmd = synth_cmd + ["-v", plan["voice"], "-s", str(plan["speed"]), "-p", str(plan["pitch"]),
                       "-a", str(plan["amplitude"]), "-g", str(plan["gap"]), "-w", out,
                       plan["text"].lower()]  # lower case: espeak-ng spells some all-caps words letter by letter
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0 or not os.path.isfile(out):
        raise DataPrepError(f"synthesiser failed for {plan['utt']} (status {r.returncode}): "
                            f"{shlex.join(cmd)}\n{r.stderr.strip()}")
    x, sr = sf.read(out, dtype="float64", always_2d=True)
    os.unlink(out)
    x = x.mean(axis=1)
    if len(x) == 0 or not np.any(x):
        raise DataPrepError(f"synthesiser wrote silence for {plan['utt']}: {shlex.join(cmd)}")
    if sr != fs:
        g = math.gcd(int(sr), int(fs))
        x = resample_poly(x, fs // g, sr // g)
    return x


def render(plan: dict, synth_cmd: list[str], fs: int, tmp_dir: str) -> np.ndarray:
    x = synthesise(plan, synth_cmd, fs, tmp_dir)
    if plan["snr"] is not None:
        rng = np.random.default_rng(plan["noise_seed"])
        noise = coloured_noise(plan["noise"], len(x), rng)
        x = x + noise * math.sqrt(speech_power(x, fs) / 10 ** (plan["snr"] / 10))
    peak = float(np.max(np.abs(x)))
    if peak > 0.95:
        x = x * (0.95 / peak)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _render_job(args):
    plan, synth_cmd, fs, wav_dir, tmp_dir = args
    y = render(plan, synth_cmd, fs, tmp_dir)
    sf.write(os.path.join(wav_dir, f"{plan['utt']}.wav"), y, fs, subtype="PCM_16", format="WAV")
    return plan["utt"], len(y)


# --------------------------------------------------------------------------- writing
def _write_map(path: Path, mapping: dict) -> None:
    path.write_text("".join(f"{k} {mapping[k]}\n" for k in sorted(mapping)), encoding="utf-8")


def write_set(set_name: str, plans: list[dict], synth_cmd: list[str], fs: int, data_dir: str,
              out_dir: Path, nj: int) -> None:
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="synth_") as tmp_dir:
        jobs = [(p, synth_cmd, fs, str(wav_dir), tmp_dir) for p in plans]
        if nj > 1:
            with Pool(nj) as pool:
                lengths = dict(pool.imap_unordered(_render_job, jobs, chunksize=8))
        else:
            lengths = dict(map(_render_job, jobs))
    files = {name: {} for name in ("wav.scp", "text", "utt2spk", "utt2dur", "utt2snr", "utt2noise",
                                   "utt2synth")}
    for p in plans:
        u = p["utt"]
        files["wav.scp"][u] = f"{data_dir}/{set_name}/wav/{u}.wav"
        files["text"][u] = p["text"]
        files["utt2spk"][u] = voice_id(p["voice"])
        files["utt2dur"][u] = f"{lengths[u] / fs:.4f}"
        files["utt2snr"][u] = "clean" if p["snr"] is None else str(p["snr"])
        files["utt2noise"][u] = p["noise"]
        files["utt2synth"][u] = f"{p['voice']} {p['speed']} {p['pitch']} {p['amplitude']} {p['gap']}"
    for name, m in files.items():
        _write_map(out_dir / name, m)
    spk2utt: dict[str, list[str]] = {}
    for u in sorted(files["utt2spk"]):
        spk2utt.setdefault(files["utt2spk"][u], []).append(u)
    _write_map(out_dir / "spk2utt", {s: " ".join(us) for s, us in spk2utt.items()})


def plan_sets(sizes: dict, seed: int, text_file: str | None, min_words: int, max_words: int,
              unseen_variants, snrs, clean_fraction: float, wordnet_dir: str = WORDNET_DIR) -> dict:
    sentences = load_sentences(text_file, min_words, max_words, wordnet_dir)
    split = split_sentences(sentences, sizes, seed)
    plans = {}
    for name in SETS:
        pool = voice_pool(name, unseen_variants)
        plans[name] = [plan_utterance(name, i, s, seed, pool, snrs, clean_fraction)
                       for i, s in enumerate(split[name])]
    return plans


def prepare(data_dir: str = "data", seed: int = 1, sizes: dict | None = None, text_file: str | None = None,
            min_words: int = 5, max_words: int = 20, unseen_variants=DEFAULT_UNSEEN, snrs=SNRS,
            clean_fraction: float = 0.2, fs: int = 16000, synth_cmd: str = "espeak-ng", nj: int = 1,
            wordnet_dir: str = WORDNET_DIR) -> list[str]:
    """Prepare every set of non-zero size; returns the names of the sets (re)built in this call."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    for name, n in sizes.items():
        if name not in SETS or n < 0:
            raise DataPrepError(f"bad set size {name}={n}")
    if not 1 <= min_words <= max_words:
        raise DataPrepError(f"need 1 <= --min_words <= --max_words, got {min_words}, {max_words}")
    if not 0.0 <= clean_fraction <= 1.0 or not snrs:
        raise DataPrepError("--clean_fraction must lie in [0, 1] and --snrs must name at least one SNR")
    data_dir = os.path.normpath(data_dir)
    cmd = shlex.split(synth_cmd)
    if not cmd or shutil.which(cmd[0]) is None:
        raise DataPrepError(f"synthesiser {synth_cmd!r} not found: install espeak-ng "
                            "(local/install_espeak.sh) or pass --synth_cmd")
    text_id = os.path.realpath(text_file) if text_file else f"wordnet:{os.path.realpath(wordnet_dir)}"
    common = {"format_version": FORMAT_VERSION, "seed": seed, "sizes": {k: sizes[k] for k in SETS},
              "text": text_id, "min_words": min_words, "max_words": max_words,
              "unseen_variants": sorted(unseen_variants), "snrs": [int(s) for s in snrs],
              "clean_fraction": clean_fraction, "fs": fs, "synth_cmd": synth_cmd, "data_dir": data_dir}
    root = Path(data_dir)
    todo = []
    for name in SETS:
        if sizes[name] == 0:
            continue
        try:
            done = json.loads((root / name / ".done").read_text()) == {**common, "set": name}
        except (OSError, ValueError):
            done = False
        if done:
            print(f"{root / name}: already prepared, skipping", file=sys.stderr)
        else:
            todo.append(name)
    if not todo:
        return []
    plans = plan_sets(sizes, seed, text_file, min_words, max_words, unseen_variants, snrs, clean_fraction,
                      wordnet_dir)
    root.mkdir(parents=True, exist_ok=True)
    for name in todo:
        tmp, final = root / f".{name}.tmp", root / name
        shutil.rmtree(tmp, ignore_errors=True)
        write_set(name, plans[name], cmd, fs, data_dir, tmp, nj)
        (tmp / ".done").write_text(json.dumps({**common, "set": name}, sort_keys=True) + "\n")
        # wav.scp names data_dir/<set>/wav/: write into the tmp dir, then move it into place
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        hours = sum(float(v) for v in (final / "utt2dur").read_text().split()[1::2]) / 3600
        print(f"{final}: {len(plans[name])} utterances, {hours:.2f} h, "
              f"{len({p['voice'] for p in plans[name]})} voices", file=sys.stderr)
    return todo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--seed", type=int, default=1)
    for name in SETS:
        ap.add_argument(f"--num_{name}", type=int, default=DEFAULT_SIZES[name])
    ap.add_argument("--text_file", default=None, help="one sentence a line (default: WordNet's examples)")
    ap.add_argument("--wordnet_dir", default=WORDNET_DIR)
    ap.add_argument("--min_words", type=int, default=5)
    ap.add_argument("--max_words", type=int, default=20)
    ap.add_argument("--unseen_variants", default=" ".join(DEFAULT_UNSEEN))
    ap.add_argument("--snrs", default=" ".join(map(str, SNRS)))
    ap.add_argument("--clean_fraction", type=float, default=0.2)
    ap.add_argument("--fs", type=int, default=16000)
    ap.add_argument("--synth_cmd", default="espeak-ng")
    ap.add_argument("--nj", type=int, default=1)
    a = ap.parse_args(argv)
    try:
        prepare(a.data_dir, a.seed, {n: getattr(a, f"num_{n}") for n in SETS}, a.text_file, a.min_words,
                a.max_words, a.unseen_variants.replace(",", " ").split(),
                [int(s) for s in a.snrs.replace(",", " ").split()], a.clean_fraction, a.fs, a.synth_cmd,
                a.nj, a.wordnet_dir)
    except DataPrepError as e:
        print(f"synth_sentences.py: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
