"""Import ESPnet's ASR task without the noise it prints when offline, and without loading the
English text front-ends until they are used.
Why it exists: every pipeline process imports the task, and g2p_en (with nltk) and tacotron_cleaner
(with inflect), which only phoneme tokenizers and the "tacotron" cleaner call, cost about 3 s of its
11-13 s on 2 cores; offline, the same import prints errors that are not errors.

``espnet2.tasks.asr`` pulls in g2p_en, which asks nltk to download tagger data at import time and
prints an error when there is no network, and it reports the missing optional flash-attn package.
Neither matters for this project, so the text printed to stdout/stderr during that import is
dropped; exceptions still propagate unchanged. g2p_en and tacotron_cleaner are put in
``sys.modules`` as stand-ins that execute the real module the first time one of its attributes is
read (ESPnet reaches both only as ``module.attribute``), so a config that uses them still works.
"""

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import sys
import types

# ESPnet's only users: espnet2/text/phoneme_tokenizer.py (g2p_en) and espnet2/text/cleaner.py
# (tacotron_cleaner.cleaners); parents before their submodules
LOADED_ON_FIRST_USE = ("g2p_en", "tacotron_cleaner", "tacotron_cleaner.cleaners")


class _LoadedOnFirstUse(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then the real module is
    executed and the stand-in takes on its attributes (references taken earlier keep working)."""

    def __getattr__(self, attribute):
        return getattr(_load_real(self.__name__), attribute)


def _load_real(name: str) -> types.ModuleType:
    parts = name.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]  # the package, then down to name
    stand_ins = {n: sys.modules.pop(n) for n in chain if isinstance(sys.modules.get(n), _LoadedOnFirstUse)}
    real = importlib.import_module(name)
    for module_name, stand_in in stand_ins.items():
        stand_in.__dict__.update(vars(sys.modules[module_name]))
    return real


def defer_until_used(name: str) -> None:
    """Put a stand-in for module ``name`` (not yet imported; its parent package deferred or absent
    from sys.modules) into ``sys.modules``."""
    if name in sys.modules:
        return
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent_name and not isinstance(parent, _LoadedOnFirstUse):
        return  # the real parent has imported it, or will: nothing to gain
    spec = importlib.util.find_spec(name) if parent is None else \
        importlib.machinery.PathFinder.find_spec(name, parent.__path__)
    if spec is None or spec.origin is None:
        return  # not installed: ESPnet's own import will say so, as it would without us
    stand_in = _LoadedOnFirstUse(name)
    # __file__ and __spec__ in the instance dict: inspect and typeguard read them from every
    # module in sys.modules, and they must not trigger the real import
    stand_in.__spec__, stand_in.__file__, stand_in.__loader__ = spec, spec.origin, spec.loader
    if spec.submodule_search_locations is not None:
        stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = stand_in
    if parent is not None:
        setattr(parent, child, stand_in)


def import_espnet_asr_task():
    for name in LOADED_ON_FIRST_USE:
        defer_until_used(name)
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        import espnet2.tasks.asr as asr_task
    return asr_task
