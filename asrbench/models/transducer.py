"""The transducer (RNN-T) family: an encoder, a prediction network and a joiner (Graves 2012).

- Encoder: any encoder of the zoo, reused whole by composition (its ``encode``; its CTC head
  becomes the auxiliary CTC branch, dropped when ``ctc_weight`` is 0). ``conformer_transducer``
  uses the Conformer encoder, ``lstm_transducer`` the BiLSTM one.
- Prediction network (``predictor``): ``stateless``, icefall's stateless decoder (an embedding and
  a depthwise 1-D convolution over the last ``context_size`` tokens, then ReLU; Ghodsi et al. 2020),
  or ``lstm``, an embedding and LSTM layers. Its start symbol is the blank (id 0), as in icefall,
  whose embedding is fixed at zero (``padding_idx``).
- Joiner: ``Linear(encoder) + Linear(predictor)``, tanh, ``Linear(joiner_dim, V - 1)``, log-softmax;
  the last token, ``<sos/eos>``, gets log-probability ``-inf`` in training and decoding alike, so
  it is never emitted. It runs in float32 (autocast off): the (B, T', U+1, V) joint tensor is what
  the loss reads.
- Loss: RNN-T (:func:`asrbench.models.rnnt_loss.rnnt_loss`, blank 0), summed over utterances and
  divided by B; with ``ctc_weight > 0``, mixed with CTC on the encoder output as the attention
  hybrids do: ``(1 - ctc_weight) * rnnt + ctc_weight * ctc``.
- Decoding (:mod:`asrbench.decoding.transducer_search`): greedy search (up to
  ``max_symbols_per_frame`` symbols a frame) and modified beam search; ``--mode ctc`` decodes the
  CTC branch with the CTC searches (lexicon and LM included).

Memory: training holds a few (B, T', U+1, joiner_dim) and (B, T', U+1, V) float32 tensors (no
pruned loss here), so the batch size is what ``joiner_dim`` and the longest transcript allow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from asrbench.errors import AsrbenchError
from asrbench.models.base import Family, TransducerFamily
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.ctc import CTCHead, CTCModel, ctc_loss
from asrbench.models.rnn import LSTM, RNNConfig
from asrbench.models.rnnt_loss import rnnt_loss
from asrbench.recipe.schema import NON_NEGATIVE, POSITIVE, PROBABILITY, choices

BLANK = 0
PREDICTORS = ("stateless", "lstm")
EVAL_JOINT_BYTES = 128 * 2**20  # the joint tensor's share of a no-grad (dev loss) pass


@dataclass
class TransducerOptions:
    """What every transducer adds to its encoder's options."""

    predictor: str = "stateless"  # stateless | lstm
    predictor_dim: int = 256  # embedding (and LSTM) width
    predictor_layers: int = 1  # lstm only
    context_size: int = 2  # stateless only: tokens the predictor sees (icefall's default)
    joiner_dim: int = 256
    ctc_weight: float = 0.3  # auxiliary CTC on the encoder; 0 = pure RNN-T
    max_symbols_per_frame: int = 3  # greedy search
    # Joiner + loss over sub-batches of this many utterances, each cut to its own longest frames
    # and transcript and recomputed in the backward pass (activation checkpointing), so training
    # holds one sub-batch's (b, T', U+1, V) joint tensor at a time, not the batch's (NeMo's
    # fused_batch_size). 0: the whole batch at once (fastest when it fits).
    fused_batch_size: int = 0

    LIMITS: ClassVar[dict] = {
        "predictor": choices(*PREDICTORS),
        "predictor_dim": POSITIVE,
        "predictor_layers": POSITIVE,
        "context_size": POSITIVE,
        "joiner_dim": POSITIVE,
        "ctc_weight": PROBABILITY,
        "max_symbols_per_frame": POSITIVE,
        "fused_batch_size": NON_NEGATIVE,
    }


class StatelessPredictor(nn.Module):
    """Embedding + depthwise convolution over the last ``context_size`` tokens + ReLU (icefall).
    Its state is those tokens, (N, context_size) int64."""

    kind = "stateless"  # what an export reads to choose the predictor graph

    def __init__(self, vocab_size: int, dim: int, context_size: int):
        super().__init__()
        self.context_size = context_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=BLANK)  # the blank context is zero
        self.conv = nn.Conv1d(dim, dim, context_size, groups=dim, bias=False) if context_size > 1 else None

    def _convolve(self, embedded: torch.Tensor) -> torch.Tensor:
        """(N, L + context_size - 1, E) -> (N, L, E)."""
        if self.conv is not None:
            embedded = self.conv(embedded.transpose(1, 2)).transpose(1, 2)
        return torch.relu(embedded)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens (B, U+1) starting with the start symbol -> (B, U+1, E). The left
        padding (zeros, the blank's embedding) is the context before the start symbol."""
        embedded = nn.functional.pad(self.embed(tokens), (0, 0, self.context_size - 1, 0))
        return self._convolve(embedded)

    def init_state(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch, self.context_size), BLANK, dtype=torch.long, device=device)

    def step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = torch.cat([state[:, 1:], tokens[:, None]], dim=1)
        return self._convolve(self.embed(context))[:, -1], context

    @staticmethod
    def select_state(state: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, indices)

    @staticmethod
    def merge_state(state: torch.Tensor, new_state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[:, None], new_state, state)


class LSTMPredictor(nn.Module):
    """Embedding + LSTM layers (the classic RNN-T prediction network). Its state is the LSTM's
    ``(h, c)``, each (layers, N, dim)."""

    kind = "lstm"

    def __init__(self, vocab_size: int, dim: int, num_layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=BLANK)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            dim, dim, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens (B, U+1) -> (B, U+1, dim); causal, so padding after an
        utterance's tokens changes none of its outputs."""
        output, _ = self.lstm(self.dropout(self.embed(tokens)))
        return self.dropout(output)

    def init_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.lstm.num_layers, batch, self.lstm.hidden_size, device=device)
        return zeros, zeros.clone()

    def step(self, tokens: torch.Tensor, state):
        output, state = self.lstm(self.dropout(self.embed(tokens[:, None])), state)
        return self.dropout(output[:, 0]), state

    @staticmethod
    def select_state(state, indices: torch.Tensor):
        return tuple(part.index_select(1, indices) for part in state)

    @staticmethod
    def merge_state(state, new_state, mask: torch.Tensor):
        return tuple(torch.where(mask[None, :, None], new, old) for old, new in zip(state, new_state, strict=True))


class Joiner(nn.Module):
    """(..., encoder_dim), (..., predictor_dim), broadcast -> float32 log-probs (..., V); the last
    token (``<sos/eos>``) is ``-inf``."""

    def __init__(self, encoder_dim: int, predictor_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.predictor_proj = nn.Linear(predictor_dim, joiner_dim)
        self.out = nn.Linear(joiner_dim, vocab_size - 1)

    def forward(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=encoded.device.type, enabled=False):
            hidden = torch.tanh(self.encoder_proj(encoded.float()) + self.predictor_proj(predicted.float()))
            log_probs = torch.log_softmax(self.out(hidden), dim=-1)
        return nn.functional.pad(log_probs, (0, 1), value=float("-inf"))


def build_predictor(vocab_size: int, options: TransducerOptions, dropout: float) -> StatelessPredictor | LSTMPredictor:
    """The prediction network ``options.predictor`` names (the options' LIMITS are checked by
    asrbench.models.build_model, their one place)."""
    if options.predictor == "lstm":
        return LSTMPredictor(vocab_size, options.predictor_dim, options.predictor_layers, dropout)
    return StatelessPredictor(vocab_size, options.predictor_dim, options.context_size)


class TransducerModel(nn.Module):
    """Base of transducers: built around an encoder (any zoo model's ``encode``); the predictor,
    the joiner and the loss are the family's. ``forward`` is the CTC branch."""

    head_kind = "transducer"  # how it decodes: the rows of asrbench.decoding.search_table
    encoder_dim: int

    def __init__(self, encoder: CTCModel, vocab_size: int, options: TransducerOptions, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.fused_batch_size = options.fused_batch_size
        self.ctc_weight = options.ctc_weight
        self.max_symbols_per_frame = options.max_symbols_per_frame
        self.encoder = encoder
        self.encoder_dim = encoder.encoder_dim
        head = getattr(encoder, "head", None)
        if head is not None:
            del encoder.head  # registered once, as ctc_head
        if options.ctc_weight > 0:
            self.ctc_head: CTCHead | None = head if head is not None else CTCHead(self.encoder_dim, vocab_size)
        else:
            self.ctc_head = None
        self.predictor = build_predictor(vocab_size, options, dropout)
        self.joiner = Joiner(self.encoder_dim, options.predictor_dim, options.joiner_dim, vocab_size)

    # -- what search drives (TransducerFamily) ------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoded (B, T', encoder_dim), output_lengths (B,)."""
        return self.encoder.encode(features, feature_lengths)

    def predictor_init_state(self, batch: int, device: torch.device):
        return self.predictor.init_state(batch, device)

    def predictor_step(self, tokens: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """tokens (N,) -> the predictor's output after reading them (N, predictor_dim), new state."""
        return self.predictor.step(tokens, state)

    def select_state(self, state, indices: torch.Tensor):
        return self.predictor.select_state(state, indices)

    def merge_state(self, state, new_state, mask: torch.Tensor):
        return self.predictor.merge_state(state, new_state, mask)

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """(..., encoder_dim), (..., predictor_dim) -> float32 log-probs (..., V)."""
        return self.joiner(encoded, predicted)

    # -- the family's contract ----------------------------------------------------------------
    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        """The CTC branch: (B, T, F), (B,) -> log_probs (B, T', V), output_lengths (B,)."""
        return self.ctc_log_probs(features, feature_lengths)

    def ctc_log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        if self.ctc_head is None:
            raise AsrbenchError("this transducer has no CTC branch (trained with ctc_weight 0)")
        encoded, lengths = self.encode(features, feature_lengths)
        return self.ctc_head(encoded), lengths

    def joint_log_probs(self, encoded: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: encoded (B, T', D), padded targets (B, U) -> (B, T', U+1, V) float32."""
        predicted = self.predictor(nn.functional.pad(targets, (1, 0), value=BLANK))  # (B, U+1, P)
        return self.join(encoded[:, :, None], predicted[:, None])

    def _joint_loss(self, encoded, predicted, padded, lengths, target_lengths) -> torch.Tensor:
        """The summed RNN-T loss of (b, T', D) encoder and (b, U+1, P) predictor outputs."""
        log_probs = self.join(encoded[:, :, None], predicted[:, None])  # (b, T', U+1, V)
        return rnnt_loss(log_probs, padded, lengths, target_lengths, blank=BLANK, reduction="sum")

    def _rnnt(self, encoded, lengths, padded, target_lengths) -> torch.Tensor:
        """RNN-T summed over the batch: at once, or in sub-batches cut to their own lengths, which
        training checkpoints (``fused_batch_size``)."""
        predicted = self.predictor(nn.functional.pad(padded, (1, 0), value=BLANK))  # (B, U+1, P)
        size, training = self.fused_batch_size, torch.is_grad_enabled()
        if not training:
            # A dev-loss pass (decode's batches are several training batches big): nothing is kept
            # for a backward pass, so sub-batches within a fixed joint-tensor budget cost nothing.
            width = max(self.joiner.out.in_features, self.vocab_size)
            size = max(1, EVAL_JOINT_BYTES // (encoded.size(1) * (padded.size(1) + 1) * width * 4))
        if not size or size >= encoded.size(0):
            return self._joint_loss(encoded, predicted, padded, lengths, target_lengths)
        total = encoded.new_zeros((), dtype=torch.float32)
        for start in range(0, encoded.size(0), size):
            part = slice(start, start + size)
            frames, labels = int(lengths[part].max()), int(target_lengths[part].max())
            inputs = (
                encoded[part, :frames],
                predicted[part, : labels + 1],
                padded[part, :labels],
                lengths[part],
                target_lengths[part],
            )
            total = total + (
                checkpoint(self._joint_loss, *inputs, use_reentrant=False) if training else self._joint_loss(*inputs)
            )
        return total

    def compute_loss(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor:
        """Targets concatenated (sum U,) with lengths (B,); RNN-T (and CTC) summed, divided by B."""
        return self.loss_from_encoded(*self.encode(features, feature_lengths), targets, target_lengths)

    def loss_from_encoded(self, encoded, lengths, targets, target_lengths) -> torch.Tensor:
        """``compute_loss`` after the encoder."""
        padded = nn.utils.rnn.pad_sequence(
            list(targets.split(target_lengths.tolist())), batch_first=True, padding_value=BLANK
        )
        rnnt = self._rnnt(encoded, lengths, padded, target_lengths) / encoded.size(0)
        if self.ctc_head is None:
            return rnnt
        ctc = ctc_loss(self.ctc_head(encoded), lengths, targets, target_lengths)
        return (1.0 - self.ctc_weight) * rnnt + self.ctc_weight * ctc

    def search_modes(self) -> tuple[str, ...]:
        return ("transducer", "ctc") if self.ctc_head is not None else ("transducer",)

    def acoustic_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def chunk_streaming(self) -> bool:
        return self.encoder.chunk_streaming

    @property
    def subsampling_factor(self) -> int:
        return self.encoder.subsampling_factor


# --- the architectures -----------------------------------------------------------------------


@dataclass
class ConformerTransducerConfig(ConformerConfig, TransducerOptions):
    num_layers: int = 6  # encoder


@dataclass
class LSTMTransducerConfig(RNNConfig, TransducerOptions):
    predictor: str = "lstm"


class ComposedTransducer(TransducerModel):
    """The transducer head over any registered encoder (``encoder_class`` built from the config's
    encoder fields); the encoder's CTC head is the auxiliary CTC branch."""

    encoder_class: ClassVar[type]
    encoder_config: ClassVar[type]

    def __init__(self, input_dim: int, vocab_size: int, config):
        encoder = self.encoder_class(input_dim, vocab_size, _encoder_options(self.encoder_config, config))
        super().__init__(encoder, vocab_size, config, getattr(config, "dropout", 0.0))


def _encoder_options(encoder_config, config):
    """The encoder's own options out of a transducer config."""
    return encoder_config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(encoder_config)})


class ConformerTransducer(TransducerModel):
    """Transducer: Conformer encoder + prediction network (stateless by default) + joiner, optional CTC branch."""

    def __init__(self, input_dim: int, vocab_size: int, config: ConformerTransducerConfig):
        encoder = Conformer(input_dim, vocab_size, _encoder_options(ConformerConfig, config))
        super().__init__(encoder, vocab_size, config, config.dropout)


class LSTMTransducer(TransducerModel):
    """Transducer: BiLSTM encoder + LSTM prediction network (by default) + joiner, optional CTC branch."""

    def __init__(self, input_dim: int, vocab_size: int, config: LSTMTransducerConfig):
        encoder = LSTM(input_dim, vocab_size, _encoder_options(RNNConfig, config))
        super().__init__(encoder, vocab_size, config, config.dropout)


TRANSDUCER = Family("transducer", TransducerFamily, TransducerModel, default_mode="transducer")
