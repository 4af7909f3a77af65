"""torchaudio's pure-Python parts work on a CPU-only torch, with or without its extension."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from asrbench import torchaudio_compat
from asrbench.torchaudio_compat import functional, kaldi, transforms


def sine(frequency: float = 440.0, rate: int = 16000, seconds: float = 0.5) -> torch.Tensor:
    time = torch.arange(int(rate * seconds)) / rate
    return torch.sin(2 * torch.pi * frequency * time)


def test_exports():
    assert set(torchaudio_compat.__all__) == {"torchaudio", "functional", "transforms", "kaldi", "EXTENSION_AVAILABLE"}
    assert isinstance(torchaudio_compat.EXTENSION_AVAILABLE, bool)


def test_kaldi_fbank():
    features = kaldi.fbank(sine().unsqueeze(0) * 32768, num_mel_bins=40, sample_frequency=16000, dither=0.0)
    assert features.shape == (1 + (8000 - 400) // 160, 40)
    assert torch.isfinite(features).all()
    # A 440 Hz tone puts its energy in a low mel bin, not in the top one.
    assert features.mean(0).argmax() < 10


def test_mel_spectrogram():
    mel = transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=32)(sine())
    assert mel.shape == (32, 8000 // 160 + 1)
    assert (mel >= 0).all()


def test_mfcc():
    mfcc = transforms.MFCC(sample_rate=16000, n_mfcc=13, melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 23})
    assert mfcc(sine()).shape == (13, 8000 // 160 + 1)


def test_masking_transforms():
    torch.manual_seed(0)
    spec = torch.rand(1, 40, 100) + 1
    frequency_masked = transforms.FrequencyMasking(freq_mask_param=20)(spec)
    time_masked = transforms.TimeMasking(time_mask_param=50)(spec)
    assert frequency_masked.shape == spec.shape and time_masked.shape == spec.shape
    zero_rows = (frequency_masked == 0).all(-1).sum()
    zero_columns = (time_masked == 0).all(1).sum()
    assert zero_rows > 0 and zero_columns > 0
    assert ((frequency_masked == spec) | (frequency_masked == 0)).all()


def test_resample():
    waveform = sine(1000, rate=8000, seconds=1.0)
    resampled = functional.resample(waveform, 8000, 16000)
    assert resampled.numel() == 16000
    peak_hz = torch.fft.rfft(resampled).abs().argmax().item() * 16000 / resampled.numel()
    assert abs(peak_hz - 1000) < 2


def test_conformer_model_is_importable():
    model = torchaudio_compat.torchaudio.models.Conformer(
        input_dim=16, num_heads=2, ffn_dim=32, num_layers=1, depthwise_conv_kernel_size=3
    )
    output, lengths = model(torch.randn(2, 10, 16), torch.tensor([10, 6]))
    assert output.shape == (2, 10, 16) and lengths.tolist() == [10, 6]


STUB_CHECK = textwrap.dedent(
    """
    import sys

    import torch

    refused = []

    def refuse(path):
        refused.append(path)
        raise OSError(f"refusing to load {path}")

    torch.ops.load_library = refuse  # as on a CPU-only torch with torchaudio's CUDA extension

    from asrbench import torchaudio_compat
    from asrbench.torchaudio_compat import kaldi

    assert refused, "torchaudio never tried to load its extension"
    assert torchaudio_compat.EXTENSION_AVAILABLE is False, torchaudio_compat.EXTENSION_AVAILABLE
    assert sys.modules["torchaudio._extension"]._IS_TORCHAUDIO_EXT_AVAILABLE is False
    features = kaldi.fbank(torch.randn(1, 8000) * 1000, num_mel_bins=23, sample_frequency=8000, dither=0.0)
    assert features.shape == (98, 23), features.shape
    assert torch.isfinite(features).all()
    print("stub ok")
    """
)


def test_stub_path_when_the_extension_cannot_load():
    result = subprocess.run([sys.executable, "-c", STUB_CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stub ok"
