"""ESPnet ASR task with the Oracle Teacher and KD-student plugins registered.

Importing this module registers, in ESPnet's own ASR registries,
``encoder: oracle_teacher``, ``model: oracle_teacher``, ``model: kd_student``,
``model: oracle_self_distill`` and the data types ``teacher_posterior`` (name
``teacher_post``), ``teacher_topk_posterior`` (name ``teacher_topk_post``) and
``teacher_hyps`` (name ``teacher_hyp``), so plain ESPnet
YAML configs select them.
Registration happens at import time because ESPnet's multi-GPU launcher spawns
fresh processes that import the task again.
"""

import argparse
from typing import Tuple

from typeguard import typechecked

from espnet_oracle.utils.quiet_import import import_espnet_asr_task

espnet_asr_task = import_espnet_asr_task()
ASRTask = espnet_asr_task.ASRTask

from espnet_oracle.asr.encoder.conformer_padding_mask import install_conformer_padding_mask
from espnet_oracle.asr.encoder.crnn_encoder import CRNNEncoder
from espnet_oracle.asr.encoder.exact_subsampling_lengths import (
    install_exact_subsampling_lengths,
)
from espnet_oracle.asr.encoder.oracle_teacher_encoder import OracleTeacherEncoder
from espnet_oracle.asr.kd_student_model import KDStudentModel
from espnet_oracle.asr.length_masked_cer import install_length_masked_cer
from espnet_oracle.asr.oracle_self_distill_model import OracleSelfDistillModel
from espnet_oracle.asr.oracle_teacher_model import OracleTeacherModel
from espnet_oracle.utils.posteriors import DATA_TYPES as POSTERIOR_DATA_TYPES
from espnet_oracle.utils.posteriors import check_token_list, read_meta, register_data_type
from espnet_oracle.utils.teacher_hyps import register_data_type as register_hyps_data_type

TEACHER_POST = "teacher_post"
TEACHER_POST_TOPK = "teacher_topk_post"
TEACHER_HYP = "teacher_hyp"


def register_plugins() -> None:
    """Add our classes to ESPnet's ASR class choices (idempotent)."""
    espnet_asr_task.encoder_choices.classes.setdefault("oracle_teacher", OracleTeacherEncoder)
    espnet_asr_task.encoder_choices.classes.setdefault("crnn", CRNNEncoder)
    espnet_asr_task.model_choices.classes.setdefault("oracle_teacher", OracleTeacherModel)
    espnet_asr_task.model_choices.classes.setdefault("kd_student", KDStudentModel)
    espnet_asr_task.model_choices.classes.setdefault("oracle_self_distill", OracleSelfDistillModel)
    register_data_type()
    register_hyps_data_type()


register_plugins()


def _token_list(args: argparse.Namespace) -> list:
    """``--token_list`` as a list (a file path until ESPnet's build_model has read it)."""
    if isinstance(args.token_list, str):
        with open(args.token_list, encoding="utf-8") as f:
            return [line.rstrip() for line in f]
    return list(args.token_list)


class OracleASRTask(ASRTask):
    """ASRTask that also accepts teacher posteriors and hypotheses as training data."""

    @classmethod
    def optional_data_names(
        cls, train: bool = True, inference: bool = False
    ) -> Tuple[str, ...]:
        ours = (TEACHER_POST, TEACHER_POST_TOPK, TEACHER_HYP)
        return tuple(super().optional_data_names(train, inference)) + ours

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace):
        if getattr(args, "encoder", None) == "oracle_teacher":
            token_list = _token_list(args)
            # The target embedding needs the vocabulary, which ESPnet only passes
            # to the model; it is saved in config.yaml with the rest of encoder_conf.
            args.encoder_conf = dict(args.encoder_conf or {}, vocab_size=len(token_list))
        model = super().build_model(args)
        # Every model built here (teachers, students with or without KD) gets the same
        # per-utterance frame counts, so the systems differ only in what they are meant to.
        install_exact_subsampling_lengths(model)
        # Conformer layers: the convolution module must not read the padding (batch-independent
        # outputs, hence posteriors that do not depend on how a dump was batched).
        install_conformer_padding_mask(model)
        # Validation cer_ctc (the time-to-accuracy curves) must not score what a model emits on
        # the padding after short utterances (ESPnet takes the argmax over the padded batch).
        install_length_masked_cer(model)
        return model

    @classmethod
    def build_iter_factory(cls, args: argparse.Namespace, distributed_option, mode: str, kwargs=None):
        # The KD model compares only the vocabulary size per batch; a token list of the same size
        # in another order would train on the wrong classes without a word. Training only: a
        # trained model must stay decodable after its posteriors are re-dumped.
        data = args.train_data_path_and_name_and_type if mode == "train" else args.valid_data_path_and_name_and_type
        token_list = _token_list(args)
        for path, _, data_type in data or []:
            if data_type in POSTERIOR_DATA_TYPES:
                check_token_list(read_meta(path), path, token_list, "the token list of this training (--token_list)")
        return super().build_iter_factory(args, distributed_option, mode, kwargs)
