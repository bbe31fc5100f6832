"""Check stored teacher posteriors against a training set before a KD run starts.

Refuses (exit status 1, naming the utterances) when utterance ids of the
features are missing from the posteriors, or when the posteriors were made
with another token list. Frame counts are checked exactly during training,
against the student's own encoder output (KDStudentModel.check_frames).
"""

import argparse
import sys
from pathlib import Path

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.posteriors import read_meta, token_list_sha


def check(post_scp: Path, feats_scp: Path, token_list: Path) -> None:
    for path in (post_scp, feats_scp, token_list):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found")
    meta = read_meta(str(post_scp))
    tokens = [line.rstrip("\n") for line in open(token_list, encoding="utf-8")]
    sha = token_list_sha(tokens)
    if meta.get("vocab_size") != len(tokens) or meta.get("token_list_sha", sha) != sha:
        raise ValueError(
            f"{post_scp} was made with another token list ({meta.get('vocab_size')} tokens) "
            f"than {token_list} ({len(tokens)} tokens): re-run stage 7"
        )
    posts = set(read_kaldi_map(post_scp))
    feats = set(read_kaldi_map(feats_scp))
    missing = sorted(feats - posts)
    if missing:
        raise ValueError(
            f"{len(missing)} utterance(s) of {feats_scp} have no teacher posteriors in "
            f"{post_scp}, e.g. {', '.join(missing[:5])} — re-run stage 7 for this set "
            "(speed perturbation or other data changes after stage 7 cause this)"
        )


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
