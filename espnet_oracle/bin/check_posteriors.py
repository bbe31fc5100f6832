"""Check stored teacher posteriors against a training set before a KD run starts.
Why it exists: frame-level KD must refuse posteriors of other features, utterances or frame counts before training starts.

Refuses (exit status 1, naming the set and what differs) posteriors of an older layout or without
a stamp, dumped from other features or transcripts than ``--feats_scp`` (and the ``text`` beside
it), from a since changed teacher model file, or with another token list; and sets where feature
utterance ids lack posteriors or posteriors lack ``utt2num_frames``. Frame counts are checked
exactly during training, against the student's encoder output (KDStudentModel.check_frames).
"""

import argparse
import sys
from pathlib import Path

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.posteriors import (
    check_layout,
    check_token_list,
    features_fingerprint,
    read_meta,
    stamp_differences,
    text_fingerprint,
)
from espnet_oracle.utils.stamps import sha256_file


def check(post_scp: Path, feats_scp: Path, token_list: Path) -> None:
    for path in (post_scp, feats_scp, token_list):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found")
    post_scp, feats_scp = Path(post_scp), Path(feats_scp)
    name = f"teacher posteriors of set {post_scp.parent.name!r} ({post_scp})"
    meta = read_meta(str(post_scp))
    check_layout(meta, post_scp)
    stamp = meta.get("stamp")
    if not stamp:
        raise ValueError(f"{name} carry no stamp of what they were made from: re-run stage 7")
    current = dict(stamp, features_sha256=features_fingerprint(feats_scp))
    text = feats_scp.parent / "text"
    if text.exists():
        current["text_sha256"] = text_fingerprint(text)
    else:
        print(f"check_posteriors: {text} not found: transcripts not compared with the dump's", file=sys.stderr)
    model = Path(meta.get("teacher_model_file", ""))
    if model.is_file():  # Path("") is no file
        current["teacher_model_sha256"] = sha256_file(model)
    else:
        print(f"check_posteriors: the teacher model {str(model) or '(none recorded)'} no longer exists: "
              "posteriors not compared with it", file=sys.stderr)
    differences = stamp_differences(stamp, current)
    if differences:
        raise ValueError(f"{name} are stale, they were dumped from other inputs than {feats_scp}"
                         f"{' and ' + str(model) if model.is_file() else ''}: " + "; ".join(differences)
                         + " — re-run stage 7 (dump teacher posteriors) so the students do not train on "
                         "old posteriors")
    tokens = [line.rstrip("\n") for line in open(token_list, encoding="utf-8")]
    check_token_list(meta, post_scp, tokens, token_list)
    posts = set(read_kaldi_map(post_scp))
    feats = set(read_kaldi_map(feats_scp))
    missing = sorted(feats - posts)
    if missing:
        raise ValueError(f"{len(missing)} utterance(s) of {feats_scp} have no teacher posteriors in "
                         f"{post_scp}, e.g. {', '.join(missing[:5])} — re-run stage 7 for this set "
                         "(speed perturbation or other data changes after stage 7 cause this)")
    frames_file = post_scp.parent / "utt2num_frames"
    frames = read_kaldi_map(frames_file) if frames_file.exists() else {}
    no_frames = sorted(posts - set(frames))
    if no_frames:
        raise ValueError(f"{frames_file} lacks frame counts of {len(no_frames)} utterance(s) of {post_scp}, "
                         f"e.g. {', '.join(no_frames[:5])}: re-run stage 7")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--post_scp", required=True)
    parser.add_argument("--feats_scp", required=True)
    parser.add_argument("--token_list", required=True)
    args = parser.parse_args(argv)
    try:
        check(Path(args.post_scp), Path(args.feats_scp), Path(args.token_list))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"check_posteriors: {error}")


if __name__ == "__main__":
    main()
