"""torchaudio without its compiled extension.

The registry's torchaudio wheel links CUDA libraries into its extension, so ``import torchaudio``
fails on a CPU-only torch. Only pure-Python parts are used here (kaldi-compatible ``fbank``,
``MelSpectrogram``, ``MFCC``, masking transforms, ``resample``), so when loading the extension
fails we import torchaudio with the extension marked unavailable. Everything in asrbench imports
torchaudio through this module.
"""

from __future__ import annotations

import sys
import types

EXTENSION_AVAILABLE = True


def _stub_extension() -> types.ModuleType:
    stub = types.ModuleType("torchaudio._extension")

    def fail_if_no_align(func):
        def unavailable(*args, **kwargs):
            raise RuntimeError(f"torchaudio.{func.__name__} needs torchaudio's compiled extension")

        return unavailable

    # the module's attributes, set through its namespace (a ModuleType declares none of them)
    vars(stub).update(
        _IS_TORCHAUDIO_EXT_AVAILABLE=False,
        _IS_ALIGN_AVAILABLE=False,
        _load_lib=lambda lib: False,
        fail_if_no_align=fail_if_no_align,
    )
    return stub


def _import_torchaudio() -> types.ModuleType:
    global EXTENSION_AVAILABLE
    try:
        import torchaudio
    except (OSError, ImportError):
        for name in list(sys.modules):
            if name == "torchaudio" or name.startswith("torchaudio."):
                del sys.modules[name]
        sys.modules["torchaudio._extension"] = _stub_extension()
        EXTENSION_AVAILABLE = False
        import torchaudio
    return torchaudio


torchaudio = _import_torchaudio()

from torchaudio import functional, transforms  # noqa: E402
from torchaudio.compliance import kaldi  # noqa: E402

__all__ = ["torchaudio", "functional", "transforms", "kaldi", "EXTENSION_AVAILABLE"]
