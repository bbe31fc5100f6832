#!/usr/bin/env python3
"""Build a noisy connected-digit corpus (TIDIGITS-like, Aurora-2 style) from FSDD.

Input: the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0, "Free Spoken Digit
Dataset (FSDD), Zohar Jackson et al."): ``<fsdd>/recordings/{digit}_{speaker}_{take}.wav``,
isolated digits, mono, 8 kHz, 16-bit.

Sets (no training recording is used by an evaluation set, neither as speech nor as babble):

* ``train``       takes 10-49 of the seen speakers (every speaker except ``--unseen_speaker``)
* ``dev``         takes 5-9 of the seen speakers
* ``test``        takes 0-4 of the seen speakers
* ``test_unseen`` all takes of the unseen speaker (default ``yweweler``)

Each utterance has one speaker (uniform over the set's speakers) and 1-7 digits
(count and digits uniform); every digit is a random take of that digit by that
speaker from the set's pool. Each recording is first made comparable in level
and edge-safe: DC removed, scaled to an RMS of ``TARGET_RMS`` (-26 dBFS),
resampled 8 -> 16 kHz with ``scipy.signal.resample_poly`` and given 5 ms
half-Hann fades at both ends. Recordings are joined with pauses of 50-300 ms
(uniform), with 100-300 ms of lead-in and tail. The "speech" signal also carries
a constant white floor at ``FLOOR_RMS`` (-80 dBFS) so that no utterance contains
digital silence (log-mel features of exact zeros are extreme outliers).

Noise conditions are balanced inside each set: round(N/5) utterances stay clean;
the others cycle through {white, pink, babble} x ``--snrs`` (default 20, 15, 10, 5, 0 dB)
and the condition list is shuffled. White noise is Gaussian; pink noise is white noise
shaped by 1/sqrt(f) in the rFFT domain (power ~ 1/f, DC removed); babble is the
sum of 4-6 "talker" streams, each a concatenation of random recordings started at a
random offset and scaled to unit RMS. With ``--babble_speakers other`` (default) the
talkers are speakers other than the utterance's own, as in real babble (a crowd of other
voices), drawn from the same set's pool; ``test_unseen`` has one speaker only, so its babble comes
from the ``test`` pool (evaluation takes of the other speakers). ``any`` is the old design:
any recording of the set's pool except the utterance's own speech recordings.

SNR definition: the active-speech samples are the union of the word spans
(the extent of each inserted FSDD recording, exactly as written to
``word_align``). The noise is scaled so that
``10*log10(sum(speech[active]**2) / sum(noise[active]**2))`` equals the drawn SNR,
where ``speech`` is the clean utterance (recordings + floor) and ``noise`` the
added noise over the same samples. If the mixture's peak exceeds 0.99, speech and
noise are scaled together (SNR unchanged). :func:`render_utterance` returns both
components so the SNR can be verified.

Everything is deterministic for a given ``--seed``: each set draws from its own
``numpy.random.default_rng([seed, crc32(set_name)])``, so the size of one set does
not change any other set, and every utterance carries its own noise seed.

Output per set, Kaldi style, under ``<data_dir>/<set>/`` (all files sorted by
utterance id, ids ``<speaker>-<set>-<5-digit index>``): ``wav.scp``
(``<data_dir>/<set>/wav/<uttid>.wav``, 16-bit 16 kHz), ``text`` (upper-case words),
``utt2spk``, ``spk2utt``, ``utt2snr`` (``clean|20|15|10|5|0``), ``utt2noise``
(``clean|white|pink|babble``), ``utt2dur`` (seconds), ``word_align``
(``uttid word_index word start end``, seconds, 4 decimals, 0-based index),
``utt2recordings`` (FSDD stems used as speech, in order) and ``utt2babble``
(sorted unique babble stems, or ``-``).

A set is built in ``<data_dir>/.<set>.tmp`` and renamed into place when complete,
with a ``.done`` marker holding the options; a set whose marker matches is
skipped, an interrupted build is restarted from scratch (no duplicates).

Bad input: a missing corpus directory or one without ``recordings/*.wav``, an
unreadable/corrupt WAV, an empty or all-zero WAV, a sample rate other than
8000 Hz or a multi-channel file is an error naming the file. File names not
matching ``{digit}_{speaker}_{take}.wav`` are skipped with a warning naming them
(stray files should not stop a run; the warning makes them visible).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from scipy.signal.windows import hann

WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
SR_IN = 8000
SR_OUT = 16000
SETS = ("train", "dev", "test", "test_unseen")
SEEN_TAKES = {"train": range(10, 50), "dev": range(5, 10), "test": range(0, 5)}
DEFAULT_SIZES = {"train": 1200, "dev": 200, "test": 300, "test_unseen": 300}
DEFAULT_UNSEEN = "yweweler"
SNRS = (20, 15, 10, 5, 0)
NOISE_TYPES = ("white", "pink", "babble")
CLEAN_FRACTION = 0.2
MIN_DIGITS, MAX_DIGITS = 1, 7
PAUSE_MS = (50.0, 300.0)
EDGE_MS = (100.0, 300.0)
BABBLE_TALKERS = (4, 6)
TARGET_RMS = 0.05  # about -26 dBFS
FLOOR_RMS = 1e-4  # about -80 dBFS
FADE_MS = 5.0
PEAK_LIMIT = 0.99
FORMAT_VERSION = 1
NAME_RE = re.compile(r"^([0-9])_([A-Za-z0-9]+)_([0-9]+)\.wav$")
DATA_FILES = (
    "wav.scp", "text", "utt2spk", "spk2utt", "utt2snr", "utt2noise", "utt2dur",
    "word_align", "utt2recordings", "utt2babble",
)


class DataPrepError(Exception):
    """Bad input or options; the message names the offending file or value."""


@dataclass(frozen=True)
class Recording:
    stem: str
    digit: int
    speaker: str
    take: int
    path: str


@dataclass(frozen=True)
class UttPlan:
    """Everything needed to render one utterance (sample counts at 16 kHz)."""

    utt_id: str
    speaker: str
    digits: tuple[int, ...]
    stems: tuple[str, ...]
    starts: tuple[int, ...]  # start sample of each word
    lengths: tuple[int, ...]  # length in samples of each word
    num_samples: int
    noise: str  # clean|white|pink|babble
    snr: int | None
    babble: tuple[tuple[int, tuple[str, ...]], ...]  # (offset, stems) per talker
    noise_seed: int


# --------------------------------------------------------------------------- corpus
def scan_corpus(fsdd: str | os.PathLike) -> list[Recording]:
    """List the FSDD recordings; bad names are skipped with a warning."""
    root = Path(fsdd)
    if not root.is_dir():
        raise DataPrepError(f"FSDD corpus directory not found: {root}")
    rec_dir = root / "recordings"
    wavs = sorted(rec_dir.glob("*.wav")) if rec_dir.is_dir() else []
    if not wavs:
        raise DataPrepError(f"no recordings/*.wav found in FSDD corpus directory {root}")
    recs = []
    for p in wavs:
        m = NAME_RE.match(p.name)
        if not m:
            warnings.warn(f"skipping {p}: name does not match {{digit}}_{{speaker}}_{{take}}.wav")
            continue
        recs.append(Recording(p.stem, int(m.group(1)), m.group(2), int(m.group(3)), str(p)))
    if not recs:
        raise DataPrepError(f"no recordings named {{digit}}_{{speaker}}_{{take}}.wav in {rec_dir}")
    return recs


def load_recording(path: str) -> np.ndarray:
    """Read one FSDD recording as float64 at 8 kHz, checking it is usable."""
    try:
        x, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/...
        raise DataPrepError(f"cannot read WAV file {path}: {e}") from e
    if sr != SR_IN:
        raise DataPrepError(f"{path}: sample rate {sr} Hz, expected {SR_IN} Hz")
    if x.shape[1] != 1:
        raise DataPrepError(f"{path}: {x.shape[1]} channels, expected mono")
    if x.shape[0] == 0:
        raise DataPrepError(f"empty WAV file (0 samples): {path}")
    return x[:, 0]


def preprocess(x: np.ndarray, path: str = "<array>") -> np.ndarray:
    """DC removal, level normalisation, 8->16 kHz resampling, edge fades."""
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < 1e-7:
        raise DataPrepError(f"silent WAV file (all samples equal): {path}")
    y = resample_poly(x * (TARGET_RMS / rms), SR_OUT // SR_IN, 1)
    nf = min(int(SR_OUT * FADE_MS / 1000), len(y) // 2)
    if nf > 0:
        ramp = hann(2 * nf + 1)[:nf]
        y[:nf] *= ramp
        y[len(y) - nf:] *= ramp[::-1]
    return y


class AudioBank:
    """Preprocessed 16 kHz audio of FSDD recordings, keyed by stem."""

    def __init__(self, recordings: list[Recording]):
        self.recordings = {r.stem: r for r in recordings}
        self._audio: dict[str, np.ndarray] = {}

    def load(self, stems, progress: bool = False) -> None:
        todo = [s for s in sorted(set(stems)) if s not in self._audio]
        it = todo
        if progress and todo:
            from tqdm import tqdm

            it = tqdm(todo, desc="loading FSDD", unit="file", file=sys.stderr, mininterval=1.0)
        for s in it:
            path = self.recordings[s].path
            self._audio[s] = preprocess(load_recording(path), path)

    def __getitem__(self, stem: str) -> np.ndarray:
        if stem not in self._audio:
            self.load([stem])
        return self._audio[stem]

    def length(self, stem: str) -> int:
        return len(self[stem])


def set_pools(recordings: list[Recording], unseen_speaker: str = DEFAULT_UNSEEN):
    """Return {set: {speaker: {digit: [stems]}}} with disjoint recordings per set."""
    speakers = sorted({r.speaker for r in recordings})
    if unseen_speaker not in speakers:
        raise DataPrepError(
            f"unseen speaker {unseen_speaker!r} has no recordings (speakers found: {', '.join(speakers)})"
        )
    seen = [s for s in speakers if s != unseen_speaker]
    if not seen:
        raise DataPrepError(f"no seen speakers left besides the unseen speaker {unseen_speaker!r}")
    pools = {name: {spk: {d: [] for d in range(10)} for spk in seen} for name in SEEN_TAKES}
    pools["test_unseen"] = {unseen_speaker: {d: [] for d in range(10)}}
    for r in sorted(recordings, key=lambda r: (r.speaker, r.digit, r.take)):
        if r.speaker == unseen_speaker:
            pools["test_unseen"][r.speaker][r.digit].append(r.stem)
            continue
        for name, takes in SEEN_TAKES.items():
            if r.take in takes:
                pools[name][r.speaker][r.digit].append(r.stem)
    return pools


def pool_stems(pool) -> list[str]:
    return sorted(s for by_digit in pool.values() for stems in by_digit.values() for s in stems)


# --------------------------------------------------------------------------- planning
def set_rng(seed: int, set_name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(set_name.encode())])


def _ms_to_samples(ms: float) -> int:
    return int(round(ms * SR_OUT / 1000.0))


def plan_set(set_name: str, num: int, seed: int, pool, bank: AudioBank, snrs=SNRS,
             babble_pool=None, babble_speakers: str = "other") -> list[UttPlan]:
    """Draw the utterances of one set (sorted by utterance id).

    ``babble_pool``: where babble talkers come from (default: ``pool``); ``babble_speakers``:
    ``other`` (talkers never the utterance's speaker) or ``any`` (any recording but the
    utterance's own speech recordings).
    """
    for spk, by_digit in pool.items():
        for d, stems in by_digit.items():
            if not stems:
                raise DataPrepError(f"set {set_name}: speaker {spk} has no recording of digit {d} in its takes")
    rng = set_rng(seed, set_name)
    babble_pool = pool if babble_pool is None else babble_pool
    babble_stems = {spk: pool_stems({spk: by_digit}) for spk, by_digit in babble_pool.items()}
    speakers = sorted(pool)
    n_clean = int(round(num * CLEAN_FRACTION))
    conds = [("clean", None)] * n_clean
    for j in range(num - n_clean):
        conds.append((NOISE_TYPES[j % len(NOISE_TYPES)], snrs[(j // len(NOISE_TYPES)) % len(snrs)]))
    order = rng.permutation(num)
    conds = [conds[k] for k in order]

    plans = []
    for i in range(num):
        spk = speakers[int(rng.integers(len(speakers)))]
        n = int(rng.integers(MIN_DIGITS, MAX_DIGITS + 1))
        digits = tuple(int(d) for d in rng.integers(0, 10, size=n))
        stems = tuple(pool[spk][d][int(rng.integers(len(pool[spk][d])))] for d in digits)
        pauses = [_ms_to_samples(v) for v in rng.uniform(*PAUSE_MS, size=n - 1)]
        lead, tail = (_ms_to_samples(v) for v in rng.uniform(*EDGE_MS, size=2))
        starts, lengths, pos = [], [], lead
        for k, s in enumerate(stems):
            if k:
                pos += pauses[k - 1]
            starts.append(pos)
            lengths.append(bank.length(s))
            pos += lengths[-1]
        total = pos + tail
        noise, snr = conds[i]
        babble = ()
        if noise == "babble":
            own = set(stems)
            cand = [s for talker, ts in sorted(babble_stems.items()) for s in ts
                    if s not in own and (babble_speakers == "any" or talker != spk)]
            if not cand:
                raise DataPrepError(f"set {set_name}: no recordings of {babble_speakers} speakers left for babble")
            talkers = []
            for _ in range(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))):
                first = cand[int(rng.integers(len(cand)))]
                offset = int(rng.integers(bank.length(first)))
                tstems, have = [first], bank.length(first) - offset
                while have < total:
                    s = cand[int(rng.integers(len(cand)))]
                    tstems.append(s)
                    have += bank.length(s)
                talkers.append((offset, tuple(tstems)))
            babble = tuple(talkers)
        plans.append(
            UttPlan(
                utt_id=f"{spk}-{set_name}-{i:05d}",
                speaker=spk,
                digits=digits,
                stems=stems,
                starts=tuple(starts),
                lengths=tuple(lengths),
                num_samples=total,
                noise=noise,
                snr=snr,
                babble=babble,
                noise_seed=int(rng.integers(2**63 - 1)),
            )
        )
    return sorted(plans, key=lambda p: p.utt_id)


# --------------------------------------------------------------------------- rendering
def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    scale = np.zeros_like(f)
    scale[1:] = 1.0 / np.sqrt(f[1:])
    return np.fft.irfft(spec * scale, n=n)


def babble_noise(plan: UttPlan, bank: AudioBank) -> np.ndarray:
    out = np.zeros(plan.num_samples)
    for offset, stems in plan.babble:
        stream = np.concatenate([bank[s] for s in stems])[offset:offset + plan.num_samples]
        out += stream / np.sqrt(np.mean(stream**2))
    return out


def active_mask(plan: UttPlan) -> np.ndarray:
    mask = np.zeros(plan.num_samples, dtype=bool)
    for st, ln in zip(plan.starts, plan.lengths):
        mask[st:st + ln] = True
    return mask


def render_utterance(plan: UttPlan, bank: AudioBank) -> dict:
    """Return float64 ``speech``, ``noise``, ``mix`` (= speech + noise) and the ``active`` mask."""
    speech = np.zeros(plan.num_samples)
    for s, st, ln in zip(plan.stems, plan.starts, plan.lengths):
        speech[st:st + ln] += bank[s]
    rng = np.random.default_rng(plan.noise_seed)
    speech += FLOOR_RMS * rng.standard_normal(plan.num_samples)
    mask = active_mask(plan)
    if plan.noise == "clean":
        noise = np.zeros(plan.num_samples)
    else:
        if plan.noise == "white":
            noise = rng.standard_normal(plan.num_samples)
        elif plan.noise == "pink":
            noise = pink_noise(rng, plan.num_samples)
        elif plan.noise == "babble":
            noise = babble_noise(plan, bank)
        else:
            raise ValueError(plan.noise)
        p_s = np.sum(speech[mask] ** 2)
        p_n = np.sum(noise[mask] ** 2)
        noise *= np.sqrt(p_s / (p_n * 10.0 ** (plan.snr / 10.0)))
    mix = speech + noise
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK_LIMIT:
        g = PEAK_LIMIT / peak
        speech, noise, mix = speech * g, noise * g, mix * g
    return {"speech": speech, "noise": noise, "mix": mix, "active": mask}


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- writing
def _fmt_t(samples: int) -> str:
    return f"{samples / SR_OUT:.4f}"


def write_set(set_name: str, plans: list[UttPlan], bank: AudioBank, data_dir: str, out_dir: Path,
              progress: bool = True) -> None:
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True)
    lines = {name: [] for name in DATA_FILES if name != "spk2utt"}
    spk2utt: dict[str, list[str]] = {}
    it = plans
    if progress:
        from tqdm import tqdm

        it = tqdm(plans, desc=f"prep {set_name}", unit="utt", file=sys.stderr, mininterval=1.0)
    for p in it:
        mix = render_utterance(p, bank)["mix"]
        sf.write(str(wav_dir / f"{p.utt_id}.wav"), to_int16(mix), SR_OUT, subtype="PCM_16", format="WAV")
        u = p.utt_id
        lines["wav.scp"].append(f"{u} {data_dir}/{set_name}/wav/{u}.wav")
        lines["text"].append(f"{u} " + " ".join(WORDS[d] for d in p.digits))
        lines["utt2spk"].append(f"{u} {p.speaker}")
        lines["utt2snr"].append(f"{u} {'clean' if p.snr is None else p.snr}")
        lines["utt2noise"].append(f"{u} {p.noise}")
        lines["utt2dur"].append(f"{u} {_fmt_t(p.num_samples)}")
        for k, (d, st, ln) in enumerate(zip(p.digits, p.starts, p.lengths)):
            lines["word_align"].append(f"{u} {k} {WORDS[d]} {_fmt_t(st)} {_fmt_t(st + ln)}")
        lines["utt2recordings"].append(f"{u} " + " ".join(p.stems))
        bab = sorted({s for _, stems in p.babble for s in stems})
        lines["utt2babble"].append(f"{u} " + (" ".join(bab) if bab else "-"))
        spk2utt.setdefault(p.speaker, []).append(u)
    lines["spk2utt"] = [f"{s} " + " ".join(sorted(us)) for s, us in sorted(spk2utt.items())]
    for name, ls in lines.items():
        (out_dir / name).write_text("".join(line + "\n" for line in ls), encoding="utf-8")


def _options(set_name, num, seed, fsdd, unseen, data_dir, snrs=SNRS, babble_speakers="other") -> dict:
    return {
        "format_version": FORMAT_VERSION, "set": set_name, "num": int(num), "seed": int(seed),
        "fsdd": os.path.realpath(fsdd), "unseen_speaker": unseen, "data_dir": data_dir,
        "snrs": [int(x) for x in snrs], "babble_speakers": babble_speakers,
    }


def babble_pool_of(set_name: str, pools, babble_speakers: str):
    """The unseen speaker's set has no other speaker: with ``other``, its babble comes from
    the ``test`` pool (other speakers' evaluation takes; no training recording is used)."""
    if set_name == "test_unseen" and babble_speakers == "other":
        return pools["test"]
    return pools[set_name]


def check_design(snrs, babble_speakers) -> None:
    if babble_speakers not in ("other", "any"):
        raise DataPrepError(f"--babble_speakers must be other or any, got {babble_speakers!r}")
    if not snrs:
        raise DataPrepError("--snrs needs at least one SNR")


def is_done(set_dir: Path, opts: dict) -> bool:
    marker = set_dir / ".done"
    try:
        return json.loads(marker.read_text()) == opts
    except (OSError, ValueError):
        return False


def prepare(fsdd: str, data_dir: str = "data", seed: int = 0, sizes: dict | None = None,
            unseen_speaker: str = DEFAULT_UNSEEN, progress: bool = True, snrs=SNRS,
            babble_speakers: str = "other") -> list[str]:
    """Prepare all sets; returns the names of the sets (re)built in this call."""
    check_design(snrs, babble_speakers)
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    data_dir = os.path.normpath(data_dir)
    if seed < 0:
        raise DataPrepError(f"--seed must be >= 0, got {seed}")
    for name, n in sizes.items():
        if name not in SETS:
            raise DataPrepError(f"unknown set {name!r}")
        if n < 0:
            raise DataPrepError(f"--num_{name} must be >= 0, got {n}")
    root = Path(data_dir)
    todo = []
    for name in SETS:
        if sizes[name] == 0:
            continue
        if is_done(root / name, _options(name, sizes[name], seed, fsdd, unseen_speaker, data_dir, snrs,
                                         babble_speakers)):
            shutil.rmtree(root / f".{name}.tmp", ignore_errors=True)
            print(f"{root / name}: already prepared, skipping", file=sys.stderr)
        else:
            todo.append(name)
    if not todo:
        return []
    recs = scan_corpus(fsdd)
    pools = set_pools(recs, unseen_speaker)
    bank = AudioBank(recs)
    bank.load(sorted({s for name in todo for p in (pools[name], babble_pool_of(name, pools, babble_speakers))
                      for s in pool_stems(p)}), progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    for name in todo:
        opts = _options(name, sizes[name], seed, fsdd, unseen_speaker, data_dir, snrs, babble_speakers)
        tmp, final, old = root / f".{name}.tmp", root / name, root / f".{name}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        plans = plan_set(name, sizes[name], seed, pools[name], bank, snrs,
                         babble_pool_of(name, pools, babble_speakers), babble_speakers)
        write_set(name, plans, bank, data_dir, tmp, progress=progress)
        (tmp / ".done").write_text(json.dumps(opts, sort_keys=True) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        print(f"{final}: {len(plans)} utterances", file=sys.stderr)
    return todo


def load_plans(fsdd: str, set_name: str, num: int, seed: int = 0, unseen_speaker: str = DEFAULT_UNSEEN,
               snrs=SNRS, babble_speakers: str = "other"):
    """Re-create the plans of one set (as written by :func:`prepare`) and an audio bank."""
    recs = scan_corpus(fsdd)
    pools = set_pools(recs, unseen_speaker)
    bank = AudioBank(recs)
    babble_pool = babble_pool_of(set_name, pools, babble_speakers)
    bank.load(sorted(set(pool_stems(pools[set_name])) | set(pool_stems(babble_pool))))
    return plan_set(set_name, num, seed, pools[set_name], bank, snrs, babble_pool, babble_speakers), bank


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsdd", required=True, help="FSDD folder (contains recordings/)")
    ap.add_argument("--data_dir", default="data", help="output folder (default: data)")
    ap.add_argument("--seed", type=int, default=0)
    for name in SETS:
        ap.add_argument(f"--num_{name}", type=int, default=DEFAULT_SIZES[name],
                        help=f"utterances in {name} (0 skips it; default {DEFAULT_SIZES[name]})")
    ap.add_argument("--unseen_speaker", default=DEFAULT_UNSEEN)
    ap.add_argument("--snrs", default=" ".join(map(str, SNRS)),
                    help=f"SNRs (dB) of the noisy utterances, cycled (default {' '.join(map(str, SNRS))})")
    ap.add_argument("--babble_speakers", default="other", choices=("other", "any"),
                    help="babble talkers: speakers other than the utterance's (default) or any")
    ap.add_argument("--no_progress", action="store_true", help="no tqdm progress bars")
    args = ap.parse_args(argv)
    warnings.simplefilter("always")
    warnings.formatwarning = lambda msg, *a, **k: f"WARNING: {msg}\n"
    try:
        snrs = tuple(int(x) for x in args.snrs.replace(",", " ").split())
    except ValueError as e:
        print(f"prepare_fsdd_digits.py: ERROR: --snrs must be integers (dB): {e}", file=sys.stderr)
        return 1
    try:
        prepare(args.fsdd, args.data_dir, args.seed, {n: getattr(args, f"num_{n}") for n in SETS},
                args.unseen_speaker, progress=not args.no_progress, snrs=snrs,
                babble_speakers=args.babble_speakers)
    except DataPrepError as e:
        print(f"prepare_fsdd_digits.py: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
