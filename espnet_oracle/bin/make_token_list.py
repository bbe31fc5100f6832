"""Stage 3: ESPnet token list (and BPE model, and text shape files).

Usage::

    python -m espnet_oracle.bin.make_token_list --text data/train/text \\
        --token_type bpe --nbpe 30 --bpe_model_prefix data/token_list/bpe/bpe \\
        --out data/token_list/bpe/tokens.txt \\
        --shape_data_dirs data/train data/dev --shape_out_dirs dump/fbank/train dump/fbank/dev

Token list format (what ESPnet's ``--token_list`` expects): one token per
line, ``<blank>`` first (CTC blank, id 0), ``<unk>`` second, ``<sos/eos>``
last.  In between:

* ``char`` / ``word``: every token of the training text, by descending
  frequency (ties in order of first appearance) -- the vocabulary that
  ``espnet2.bin.tokenize_text --write_vocabulary true --add_symbol
  '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'`` writes.
  Tokenization uses ESPnet's own CharTokenizer (space -> ``<space>``) and
  WordTokenizer, configured as ``espnet2.text.build_tokenizer`` does.
* ``bpe``: a sentencepiece BPE model (``<prefix>.model``/``.vocab``, trained
  on the transcripts without utterance ids, ``character_coverage=1.0``) and
  every piece of its vocabulary except its ``<unk>``/``<s>``/``</s>``, in
  sentencepiece id order, as ESPnet's asr.sh builds BPE token lists -- so
  any piece the model emits on unseen text has an id.  The list has exactly
  ``nbpe`` entries.

For every ``--shape_data_dirs D`` / ``--shape_out_dirs O`` pair, writes
``O/text_shape.<token_type>`` with lines ``uttid L`` (``L`` = number of tokens
of the utterance's transcript under this tokenizer, as ESPnet's
CommonPreprocessor would produce; ``uttid L,V`` with
``--shape_append_vocab_size``, V = token list size, like asr.sh does).

All outputs are written atomically; the list/model are rebuilt only when the
text or the options changed (stamp ``.<out name>.done`` next to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

from espnet_oracle.utils.datadir import (
    DataDirError,
    atomic_write_text,
    file_sha256,
    read_kaldi_map,
    write_kaldi_map,
)

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
SPECIAL_SYMBOLS = (BLANK, UNK, SOS_EOS)
TOKEN_TYPES = ("char", "word", "bpe")


def build_tokenizer(token_type: str, bpemodel: Optional[str] = None, space_symbol: str = "<space>"):
    """The ESPnet tokenizer ``espnet2.text.build_tokenizer.build_tokenizer`` returns for
    these arguments (imported class by class: the full module pulls in g2p packages
    that try to download NLTK data)."""
    if token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        return CharTokenizer(non_linguistic_symbols=None, space_symbol=space_symbol,
                             remove_non_linguistic_symbols=False, nonsplit_symbols=None)
    if token_type == "word":
        from espnet2.text.word_tokenizer import WordTokenizer

        return WordTokenizer(delimiter=None)
    if token_type == "bpe":
        if bpemodel is None:
            raise ValueError("token_type=bpe needs a bpe model")
        from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

        return SentencepiecesTokenizer(str(bpemodel), {})
    raise ValueError(f"unsupported token_type {token_type!r}; choose from {TOKEN_TYPES}")


def frequency_vocabulary(transcripts, tokenizer) -> list[str]:
    """Tokens of ``transcripts`` by descending count (stable), like tokenize_text's vocabulary."""
    counter: Counter = Counter()
    for line in transcripts:
        counter.update(tokenizer.text2tokens(" ".join(line.split())))
    return [tok for tok, _ in sorted(counter.items(), key=lambda kv: -kv[1])]


def train_bpe(transcripts: list[str], prefix: Path, nbpe: int) -> None:
    """Train a sentencepiece BPE model; writes ``prefix.model`` and ``prefix.vocab`` atomically."""
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=prefix.parent, prefix=f".{prefix.name}.") as tmpdir:
        train_txt = Path(tmpdir) / "train.txt"
        train_txt.write_text("".join(t + "\n" for t in transcripts if t.strip()), encoding="utf-8")
        tmp_prefix = Path(tmpdir) / "bpe"
        try:
            spm.SentencePieceTrainer.train(
                input=str(train_txt),
                model_prefix=str(tmp_prefix),
                model_type="bpe",
                vocab_size=nbpe,
                character_coverage=1.0,
                input_sentence_size=100_000_000,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"sentencepiece training failed (try a smaller --nbpe than {nbpe}): {exc}") from exc
        # .vocab first: readers look for .model.
        os.replace(f"{tmp_prefix}.vocab", f"{prefix}.vocab")
        os.replace(f"{tmp_prefix}.model", f"{prefix}.model")


def bpe_vocabulary(model: Path) -> list[str]:
    """Pieces of a sentencepiece model minus its unk/control symbols, in id order."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    return [
        sp.id_to_piece(i)
        for i in range(sp.get_piece_size())
        if not (sp.is_unknown(i) or sp.is_control(i))
    ]


def assemble_token_list(tokens: list[str]) -> list[str]:
    body = []
    seen = set(SPECIAL_SYMBOLS)
    for tok in tokens:
        if tok not in seen:
            seen.add(tok)
            body.append(tok)
    return [BLANK, UNK] + body + [SOS_EOS]


def read_token_list(path: Path) -> list[str]:
    return [line.rstrip("\n") for line in Path(path).open(encoding="utf-8") if line.rstrip("\n")]


def write_text_shape(data_dir: Path, out_dir: Path, token_type: str, tokenizer, vocab: set[str],
                     append_vocab_size: bool) -> tuple[int, int, int]:
    """Write ``out_dir/text_shape.<token_type>``; returns (#utts, #tokens, #OOV tokens)."""
    text = read_kaldi_map(data_dir / "text")
    shapes = {}
    n_tok = n_oov = 0
    for utt, transcript in text.items():
        tokens = tokenizer.text2tokens(transcript)
        n_tok += len(tokens)
        n_oov += sum(1 for t in tokens if t not in vocab)
        shapes[utt] = f"{len(tokens)},{len(vocab)}" if append_vocab_size else str(len(tokens))
    write_kaldi_map(out_dir / f"text_shape.{token_type}", shapes)
    return len(shapes), n_tok, n_oov


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet_oracle.bin.make_token_list",
        description="Build an ESPnet token list (char/word/bpe) and text shape files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--text", required=True, help="Kaldi text file of the training set")
    parser.add_argument("--token_type", required=True, choices=TOKEN_TYPES)
    parser.add_argument("--out", required=True, help="token list to write, e.g. data/token_list/bpe/tokens.txt")
    parser.add_argument("--nbpe", type=int, default=30, help="sentencepiece vocabulary size (bpe)")
    parser.add_argument("--bpe_model_prefix", default=None,
                        help="bpe model prefix (writes <prefix>.model); default: <dir of --out>/bpe")
    parser.add_argument("--space_symbol", default="<space>", help="char tokenizer's word separator token")
    parser.add_argument("--shape_data_dirs", nargs="*", default=[], help="data dirs whose text to measure")
    parser.add_argument("--shape_out_dirs", nargs="*", default=[],
                        help="where to write text_shape.<token_type>, one per --shape_data_dirs")
    parser.add_argument("--shape_append_vocab_size", action="store_true",
                        help="write 'uttid L,V' (as ESPnet asr.sh) instead of 'uttid L'")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser


def _log(msg: str) -> None:
    print(f"make_token_list: {msg}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if len(args.shape_data_dirs) != len(args.shape_out_dirs):
        parser.error("--shape_data_dirs and --shape_out_dirs need the same number of entries")
    if args.token_type == "bpe" and args.nbpe < 4:
        parser.error("--nbpe must be >= 4")

    text_path, out = Path(args.text), Path(args.out)
    transcripts = list(read_kaldi_map(text_path).values())
    if not transcripts:
        raise DataDirError(f"{text_path}: empty")
    bpe_prefix = None
    if args.token_type == "bpe":
        bpe_prefix = Path(args.bpe_model_prefix) if args.bpe_model_prefix else out.parent / "bpe"
    bpe_model = Path(f"{bpe_prefix}.model") if bpe_prefix else None

    options = {
        "token_type": args.token_type,
        "space_symbol": args.space_symbol if args.token_type == "char" else None,
        "nbpe": args.nbpe if args.token_type == "bpe" else None,
        "bpe_model": str(bpe_model) if bpe_model else None,
        "format_version": 1,
    }
    stamp_path = out.parent / f".{out.name}.done"
    text_sha = file_sha256(text_path)
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = None
    up_to_date = (
        not args.force
        and stamp is not None
        and stamp.get("options") == options
        and stamp.get("text_sha256") == text_sha
        and out.is_file()
        and stamp.get("token_list_sha256") == file_sha256(out)
        and (bpe_model is None or (bpe_model.is_file() and stamp.get("bpe_model_sha256") == file_sha256(bpe_model)))
    )

    if up_to_date:
        _log(f"{out} is up to date")
    else:
        if stamp_path.exists():
            stamp_path.unlink()
        if args.token_type == "bpe":
            train_bpe(transcripts, bpe_prefix, args.nbpe)
            tokens = bpe_vocabulary(bpe_model)
        else:
            tokens = frequency_vocabulary(transcripts, build_tokenizer(args.token_type, space_symbol=args.space_symbol))
        token_list = assemble_token_list(tokens)
        atomic_write_text(out, "".join(t + "\n" for t in token_list))
        new_stamp = {
            "options": options,
            "text": str(text_path),
            "text_sha256": text_sha,
            "token_list_sha256": file_sha256(out),
            "bpe_model_sha256": file_sha256(bpe_model) if bpe_model else None,
        }
        atomic_write_text(stamp_path, json.dumps(new_stamp, indent=1, sort_keys=True) + "\n")
        _log(f"{len(token_list)} tokens ({args.token_type}) -> {out}"
             + (f" (bpe model {bpe_model})" if bpe_model else ""))

    if args.shape_data_dirs:
        tokenizer = build_tokenizer(args.token_type, bpemodel=bpe_model, space_symbol=args.space_symbol)
        vocab = set(read_token_list(out))
        for data_dir, out_dir in zip(args.shape_data_dirs, args.shape_out_dirs):
            n_utt, n_tok, n_oov = write_text_shape(Path(data_dir), Path(out_dir), args.token_type,
                                                   tokenizer, vocab, args.shape_append_vocab_size)
            oov = 100.0 * n_oov / max(n_tok, 1)
            _log(f"{out_dir}/text_shape.{args.token_type}: {n_utt} utterances, {n_tok} tokens, OOV {oov:.2f}%")
    return 0


def cli() -> int:
    try:
        return main()
    except (DataDirError, RuntimeError, ValueError) as exc:
        print(f"make_token_list: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
