"""Fixtures shared by the tests (the plugin tests build models through the task)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def load_script():
    """load_script(path): a recipe's ``local/*.py`` tool imported from its path (not a package module)."""
    def load(path):
        spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models: one thread is fastest on 2 cores and keeps timings steady."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def task():
    """ESPnet's ASR task with the espnet_oracle plugins registered (imported once)."""
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    return OracleASRTask


@pytest.fixture(scope="module")
def token_file(request, tmp_path_factory):
    """An ESPnet token list file holding the requesting test module's ``TOKENS``."""
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("\n".join(request.module.TOKENS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def write_mvn_stats():
    """``write(path, dim, mean=-5.0, var=4.0)``: an ESPnet global-MVN stats file (``feats_stats.npz``
    as collect_stats writes it); ``mean``/``var`` a scalar (every bin) or one value per bin."""
    import numpy as np

    def write(path, dim: int, mean=-5.0, var=4.0, count: int = 1000):
        means = np.broadcast_to(np.asarray(mean, dtype=float), (dim,))
        variances = np.broadcast_to(np.asarray(var, dtype=float), (dim,))
        np.savez(path, count=count, sum=means * count, sum_square=(variances + means**2) * count)
        return path

    return write


@pytest.fixture(scope="session")
def step_twice():
    """``step(task, model, args, inputs)``: two training steps with the config's optimizer and
    gradient clipping; finite losses, >90 % of the parameter tensors changed; returns the losses."""
    import torch

    def step(task, model, args, inputs):
        optimizer = task.build_optimizers(args, model)[0]
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        model.train()
        losses = []
        for _ in range(2):
            fresh = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            loss, stats, _ = model(**fresh)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            assert torch.isfinite(loss), stats
            losses.append(float(loss.detach()))
        changed = sum(not torch.equal(before[k], v) for k, v in model.named_parameters())
        assert changed > 0.9 * len(before)
        return losses

    return step


@pytest.fixture(scope="module")
def teacher_dir(task, token_file, tmp_path_factory):
    """A tiny conventional CTC teacher (d = 16, one block, random weights) laid out like a
    trained ESPnet experiment: ``config.yaml`` + ``valid.loss.ave.pth``."""
    from pathlib import Path

    import torch
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    conf = Path(__file__).resolve().parents[1] / "conf" / "train_teacher_conventional.yaml"
    tiny = [arg for item in ("output_size=16", "attention_heads=2", "linear_units=32", "num_blocks=1")
            for arg in ("--encoder_conf", item)]
    exp = tmp_path_factory.mktemp("teacher")
    args = task.get_parser().parse_args([
        "--config", str(conf), "--token_list", str(token_file), "--token_type", "char",
        "--normalize", "utterance_mvn", "--output_dir", str(exp), *tiny,
    ])
    torch.manual_seed(0)
    model = task.build_model(args)
    with open(exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.loss.ave.pth")
    return exp
