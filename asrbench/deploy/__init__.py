"""Stage 8, deployment: a run dir in, a model that runs where users deploy out.

Enters: a run dir or an export dir, audio files of any length. Leaves: ONNX exports with their
metadata (:mod:`asrbench.deploy.export`), the onnxruntime runtime that needs no PyTorch
(:mod:`asrbench.deploy.onnx_runtime`, with the NumPy front end :mod:`asrbench.deploy.numpy_fbank`),
and ``transcribe``: voice-activity segmentation (:mod:`asrbench.deploy.vad`), decoding, word
timings, JSON/SRT/VTT/text output.
"""
