"""Scene-text recipe data tools (egs/synth_words/local): word-image rendering, the STR
benchmark readers (LMDB and folder + gt.txt) and the image column features.

Fixtures are built by the tests: a small word list, DejaVu fonts (Debian
fonts-dejavu-core/-extra; the tests skip without them), tiny LMDBs and folders.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "egs" / "synth_words" / "local"
sys.path.insert(0, str(LOCAL))

import benchmark_reader  # noqa: E402
import extract_image_features  # noqa: E402
import render_words  # noqa: E402
from str_common import ALPHABET, filter_label  # noqa: E402

from espnet_oracle.utils.datadir import read_kaldi_map, validate_data_dir  # noqa: E402

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
TRAIN_FONTS = "DejaVu Sans,DejaVu Serif"
UNSEEN_FONTS = "DejaVu Sans Mono"
WORDS = (
    "apple banana cherry dog elephant forest garden harbour island jungle kitten lemon "
    "mountain night ocean pepper quiet river stone tiger umbrella valley window yellow zebra "
    "Boston London Paris Turing a I bridge candle doctor engine fabric guitar hammer "
    "insect jacket kettle ladder magnet needle orange pencil quartz rabbit saddle tunnel "
    "velvet wagon xylophone yogurt zipper anchor basket cactus dragon"
).split()
SIZES = {"train": 40, "dev": 8, "test": 30, "test_unseen_fonts": 30}


# --------------------------------------------------------------------------- #
# Rendering                                                                    #
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def word_list(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words"
    # the loader must skip possessives, accented and non-alphabetic lines
    path.write_text("\n".join(WORDS + ["dog's", "café", "x-ray", ""]) + "\n", encoding="utf-8")
    return path


def render(out: Path, word_list: Path, seed: int = 3, nj: int = 1, **sizes) -> Path:
    if not all((DEJAVU / f).is_file() for f in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")):
        pytest.skip("DejaVu fonts not installed (Debian fonts-dejavu-core, fonts-dejavu-extra)")
    counts = dict(SIZES, **sizes)
    argv = [
        "--data_dir", str(out / "data"), "--image_dir", str(out / "images"), "--seed", str(seed),
        "--word_list", str(word_list), "--font_dirs", str(DEJAVU),
        "--train_fonts", TRAIN_FONTS, "--unseen_fonts", UNSEEN_FONTS,
        "--test_string_fraction", "0.3", "--nj", str(nj),
    ]
    for name, n in counts.items():
        argv += [f"--num_{name}", str(n)]
    assert render_words.main(argv) == 0
    return out / "data"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, word_list):
    return render(tmp_path_factory.mktemp("render_a"), word_list)


def read_set(data: Path, name: str):
    d = data / name
    validate_data_dir(d, required=("img.scp", "text", "utt2spk"), optional=("utt2font",))
    return (read_kaldi_map(d / "img.scp"), read_kaldi_map(d / "text"), read_kaldi_map(d / "utt2spk"))


def test_render_same_seed_same_bytes(rendered, tmp_path, word_list):
    # a second run, with two worker processes: identical files, identical image bytes
    again = render(tmp_path, word_list, nj=2)
    for name in SIZES:
        for f in ("img.scp", "text", "utt2spk", "spk2utt", "utt2font"):
            a = (rendered / name / f).read_text()
            b = (again / name / f).read_text()
            if f == "img.scp":  # the image paths differ by the output dir only
                a = [line.split()[0] for line in a.splitlines()]
                b = [line.split()[0] for line in b.splitlines()]
            assert a == b, (name, f)
        img_a, _, _ = read_set(rendered, name)
        img_b, _, _ = read_set(again, name)
        for utt in img_a:
            assert Path(img_a[utt]).read_bytes() == Path(img_b[utt]).read_bytes(), utt


def test_render_other_seed_differs(rendered, tmp_path, word_list):
    other = render(tmp_path, word_list, seed=4, train=10, dev=1, test=1, test_unseen_fonts=1)
    img_a, _, _ = read_set(rendered, "train")
    img_b, _, _ = read_set(other, "train")
    common = sorted(set(img_a) & set(img_b))
    assert sum(Path(img_a[u]).read_bytes() != Path(img_b[u]).read_bytes() for u in common) >= len(common) - 1


def test_render_skips_when_up_to_date(rendered, word_list, capsys):
    before = {p: p.stat().st_mtime_ns for p in (rendered / "train").iterdir()}
    render(rendered.parent, word_list)
    assert {p: p.stat().st_mtime_ns for p in (rendered / "train").iterdir()} == before
    assert "up to date" in capsys.readouterr().err


def test_render_splits_are_disjoint(rendered):
    texts, spks = {}, {}
    for name in SIZES:
        img, text, utt2spk = read_set(rendered, name)
        assert len(img) == SIZES[name]
        texts[name] = set(text.values())
        spks[name] = set(utt2spk.values())
    training_fonts = spks["train"] | spks["dev"] | spks["test"]
    assert training_fonts <= {"DejaVuSans", "DejaVuSerif"}
    assert spks["test_unseen_fonts"] == {"DejaVuSansMono"}
    assert not training_fonts & spks["test_unseen_fonts"]
    # no transcript of a test set is ever used in training (train or dev)
    for test_set in ("test", "test_unseen_fonts"):
        assert not texts[test_set] & (texts["train"] | texts["dev"]), test_set
    # both pools are actually used: dictionary words and generated strings
    everything = set().union(*texts.values())
    assert everything & {w.lower() for w in WORDS}
    assert any(any(c.isdigit() for c in t) for t in everything)


def test_render_images_and_transcripts(rendered):
    img, text, utt2spk = read_set(rendered, "train")
    widths = []
    for utt, path in img.items():
        assert utt.startswith(utt2spk[utt] + "-train-")
        assert text[utt] and set(text[utt]) <= set(ALPHABET), text[utt]
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.height == 32
            # at least --min_width_per_char (9) px per character + 4
            assert im.width >= 9 * len(text[utt]) + 4, (utt, im.width, text[utt])
            widths.append(im.width)
    assert len(set(widths)) > 5  # width proportional to the word, not fixed


def test_render_refuses_shared_or_missing_fonts(tmp_path, word_list):
    with pytest.raises(render_words.RenderError, match="both in --train_fonts and --unseen_fonts"):
        render_words.main(["--data_dir", str(tmp_path), "--word_list", str(word_list),
                           "--train_fonts", "DejaVu Sans", "--unseen_fonts", "DejaVu Sans"])
    with pytest.raises(render_words.RenderError, match="No Such Font.*install_fonts.sh"):
        render_words.main(["--data_dir", str(tmp_path), "--word_list", str(word_list),
                           "--font_dirs", str(DEJAVU), "--train_fonts", "No Such Font",
                           "--unseen_fonts", "DejaVu Sans Mono"])


# --------------------------------------------------------------------------- #
# Benchmark readers                                                            #
# --------------------------------------------------------------------------- #
def image_bytes(fmt: str = "PNG", size=(60, 20), colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def write_lmdb(path: Path, samples, num_samples=None, extra=None):
    """samples: list of (image bytes or None, label or None); 1-based keys as the toolkits write."""
    import lmdb

    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, label) in enumerate(samples, 1):
            if img is not None:
                txn.put(f"image-{i:09d}".encode(), img)
            if label is not None:
                txn.put(f"label-{i:09d}".encode(), label.encode("utf-8"))
        if num_samples is not False:
            n = len(samples) if num_samples is None else num_samples
            txn.put(b"num-samples", str(n).encode())
        for k, v in (extra or {}).items():
            txn.put(k, v)
    env.close()
    return path


GOOD_SAMPLES = [
    (image_bytes("PNG"), "Hello"),
    (image_bytes("JPEG"), "SVT-2013!"),
    (image_bytes("PNG", (30, 40)), "Café"),
    (image_bytes("PNG"), "!!!"),  # empty after filtering: skipped
    (image_bytes("PNG"), "a" * 26),  # longer than 25: skipped
    (image_bytes("JPEG"), "it's"),
]


def test_lmdb_reader_filters_labels_like_the_toolkits(tmp_path):
    src = write_lmdb(tmp_path / "IIIT5k_3000", GOOD_SAMPLES)
    name, counts = benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images")
    assert name == "IIIT5k_3000"
    img, text, utt2spk = read_set(tmp_path / "data", name)
    assert list(text.values()) == ["hello", "svt2013", "cafe", "its"]
    assert list(text) == [f"IIIT5k_3000-{i:09d}" for i in (1, 2, 3, 6)]  # record order kept
    assert set(utt2spk.values()) == {"IIIT5k_3000"}
    assert (counts.records, counts.kept, counts.skipped_empty, counts.skipped_too_long) == (6, 4, 1, 1)
    assert counts.label_changed == 3  # SVT-2013!, Café, it's
    # images are extracted unchanged, with their format's extension
    assert img["IIIT5k_3000-000000002"].endswith(".jpg")
    assert Path(img["IIIT5k_3000-000000001"]).read_bytes() == GOOD_SAMPLES[0][0]
    raw = read_kaldi_map(tmp_path / "data" / name / "utt2label_raw")
    assert raw["IIIT5k_3000-000000002"] == "SVT-2013!"
    stamp = json.loads((tmp_path / "data" / name / ".done").read_text())
    assert stamp["counts"]["kept"] == 4
    # without accent folding, é is dropped instead
    _, counts = benchmark_reader.convert(src, tmp_path / "data2", tmp_path / "images2",
                                         normalize_unicode=False)
    assert read_kaldi_map(tmp_path / "data2" / name / "text")["IIIT5k_3000-000000003"] == "caf"


def test_lmdb_reader_bad_records(tmp_path):
    undecodable = write_lmdb(tmp_path / "bad_image", GOOD_SAMPLES[:2] + [(b"not an image", "word")])
    with pytest.raises(benchmark_reader.BenchmarkError, match=r"sample 3 \(key 'image-000000003'\).*decode"):
        benchmark_reader.convert(undecodable, tmp_path / "data", tmp_path / "images")
    _, counts = benchmark_reader.convert(undecodable, tmp_path / "data", tmp_path / "images", on_error="skip")
    assert (counts.kept, counts.skipped_bad) == (2, 1) and "image-000000003" in counts.bad_records[0]

    no_label = write_lmdb(tmp_path / "no_label", GOOD_SAMPLES[:2] + [(image_bytes(), None)])
    with pytest.raises(benchmark_reader.BenchmarkError, match="key 'label-000000003' is missing"):
        benchmark_reader.convert(no_label, tmp_path / "data", tmp_path / "images")
    # num-samples larger than what is stored: the first missing image key is named
    short = write_lmdb(tmp_path / "short", GOOD_SAMPLES[:1] + [(None, "word")], num_samples=2)
    with pytest.raises(benchmark_reader.BenchmarkError, match="key 'image-000000002' is missing"):
        benchmark_reader.convert(short, tmp_path / "data", tmp_path / "images")
    no_count = write_lmdb(tmp_path / "no_count", GOOD_SAMPLES[:1], num_samples=False)
    with pytest.raises(benchmark_reader.BenchmarkError, match="'num-samples' is missing"):
        benchmark_reader.convert(no_count, tmp_path / "data", tmp_path / "images")


def test_folder_reader_both_gt_layouts(tmp_path):
    src = tmp_path / "IC13"
    (src / "imgs").mkdir(parents=True)
    for i in range(1, 5):
        (src / "imgs" / f"word_{i}.png").write_bytes(image_bytes("PNG", (20 + 10 * i, 16)))
    absolute = src / "imgs" / "word_4.png"
    (src / "gt.txt").write_text(
        "\ufeff"  # ICDAR files often start with a BOM
        'imgs/word_1.png, "Tiredness"\n'
        "imgs/word_2.png\tKILLS 2\n"
        '\n'
        'imgs/word_3.png, "\\"A\\""\n'
        f"{absolute}\tEnd.\n",
        encoding="utf-8",
    )
    name, counts = benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images")
    img, text, _ = read_set(tmp_path / "data", name)
    assert list(text.values()) == ["tiredness", "kills2", "a", "end"]
    assert img["IC13-000000001"] == str(src / "imgs" / "word_1.png")  # used in place
    assert img["IC13-000000004"] == str(absolute)
    assert counts.kept == 4


def test_folder_reader_bad_records(tmp_path):
    src = tmp_path / "svt"
    src.mkdir()
    (src / "ok.png").write_bytes(image_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (src / "gt.txt").write_text("ok.png\tword\nbroken.jpg\tword\n", encoding="utf-8")
    with pytest.raises(benchmark_reader.BenchmarkError, match=r"gt.txt:2 \(image broken.jpg\).*decode"):
        benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images")
    (src / "gt.txt").write_text("ok.png\tword\nmissing.png\tword\n", encoding="utf-8")
    with pytest.raises(benchmark_reader.BenchmarkError, match=r"gt.txt:2 \(image missing.png\)"):
        benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images")
    (src / "gt.txt").write_text("ok.png\tword\nok.png word without separator\n", encoding="utf-8")
    with pytest.raises(benchmark_reader.BenchmarkError, match=r"gt.txt:2: neither"):
        benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images")
    _, counts = benchmark_reader.convert(src, tmp_path / "data", tmp_path / "images", on_error="skip")
    assert (counts.kept, counts.skipped_bad) == (1, 1)


def test_benchmark_cli_parent_dir(tmp_path, capsys):
    parent = tmp_path / "evaluation"
    write_lmdb(parent / "SVT", GOOD_SAMPLES[:2])
    write_lmdb(parent / "CUTE80", GOOD_SAMPLES[2:3])
    (parent / "not_a_benchmark").mkdir()
    assert benchmark_reader.main([str(parent), "--data_dir", str(tmp_path / "data")]) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.name != "images") == ["CUTE80", "SVT"]
    assert "SVT: 2 of 2 samples" in capsys.readouterr().err
    with pytest.raises(benchmark_reader.BenchmarkError, match="not a benchmark"):
        benchmark_reader.main([str(parent / "not_a_benchmark"), "--data_dir", str(tmp_path / "d")])


def test_filter_label():
    assert filter_label("Ünïcode 42-B") == "unicode42b"
    assert filter_label("Ünïcode", normalize_unicode=False) == "ncode"
    assert filter_label("?!") == ""


# --------------------------------------------------------------------------- #
# Image features                                                               #
# --------------------------------------------------------------------------- #
def test_image_to_columns_layout_and_sizes():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, mode="RGB")
    rgb = extract_image_features.image_to_columns(img, channels=3)  # already height 32: no resampling
    assert rgb.shape == (40, 96) and rgb.dtype == np.float32
    for x, c, y in [(0, 0, 0), (7, 1, 5), (39, 2, 31)]:
        assert rgb[x, c * 32 + y] == pytest.approx(pixels[y, x, c] / 255.0)
    grey = extract_image_features.image_to_columns(img)
    assert grey.shape == (40, 32)
    assert grey[3, 4] == pytest.approx(np.asarray(img.convert("L"))[4, 3] / 255.0)
    # aspect kept at height 32; capped and minimum widths
    assert extract_image_features.image_to_columns(Image.new("L", (50, 16))).shape == (100, 32)
    assert extract_image_features.image_to_columns(Image.new("L", (300, 20))).shape == (256, 32)
    assert extract_image_features.image_to_columns(Image.new("L", (300, 20)), max_width=160).shape == (160, 32)
    assert extract_image_features.image_to_columns(Image.new("L", (4, 40))).shape == (8, 32)


def test_extract_features_data_dir(tmp_path):
    import kaldiio

    data = tmp_path / "data"
    (tmp_path / "img").mkdir()
    sizes = {"spkA-1": (50, 16), "spkA-2": (64, 32), "spkB-1": (600, 30)}
    from str_common import write_image_data_dir

    img = {}
    for utt, size in sizes.items():
        img[utt] = str(tmp_path / "img" / f"{utt}.jpg")
        Image.new("RGB", size, (10, 200, 90)).save(img[utt])
    write_image_data_dir(data, img, {u: "word" for u in sizes}, {u: u.split("-")[0] for u in sizes})
    out = tmp_path / "dump"
    argv = ["--data_dir", str(data), "--out_dir", str(out)]
    assert extract_image_features.main(argv) == 0
    shapes = read_kaldi_map(out / "feats_shape")
    assert shapes == {"spkA-1": "100,32", "spkA-2": "64,32", "spkB-1": "256,32"}
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    for utt, shape in shapes.items():
        w, d = map(int, shape.split(","))
        assert feats[utt].shape == (w, d) and feats[utt].dtype == np.float32
        assert 0.0 <= feats[utt].min() and feats[utt].max() <= 1.0
    assert (out / "text").read_text() == (data / "text").read_text()
    assert read_kaldi_map(out / "spk2utt") == {"spkA": "spkA-1 spkA-2", "spkB": "spkB-1"}
    assert json.loads((out / ".done").read_text())["squeezed_to_max_width"] == 1
    mtime = (out / "feats.scp").stat().st_mtime_ns
    extract_image_features.main(argv)  # up to date: nothing rewritten
    assert (out / "feats.scp").stat().st_mtime_ns == mtime
    # RGB: 96 values per column
    extract_image_features.main(["--data_dir", str(data), "--out_dir", str(tmp_path / "rgb"), "--channels", "3"])
    assert read_kaldi_map(tmp_path / "rgb" / "feats_shape")["spkA-2"] == "64,96"
    # an unreadable image is named with its utterance
    Path(img["spkB-1"]).write_bytes(b"garbage")
    with pytest.raises(extract_image_features.ImageFeatureError, match="utterance spkB-1: cannot read image"):
        extract_image_features.main(argv)
