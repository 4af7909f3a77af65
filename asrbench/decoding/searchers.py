"""Decoding options and the searcher they select, for every model family.

A searcher splits recognition in two so that speed can be reported for each part:
``outputs(features, feature_lengths)`` runs the network (the encoder, and the CTC head where it
is used) and ``search(outputs)`` turns them into token ids. CTC beam search therefore gets a
search-only real-time factor; attention beam search calls the decoder network inside its
search, so its "search" time includes the decoder.

Which search runs:
- ``mode`` "auto": CTC models decode their CTC output; attention models their decoder
  (joint CTC/attention scoring when ``ctc_weight`` > 0 and the model has a CTC branch).
- ``mode`` "ctc": the CTC output of any model that has one (a hybrid's CTC branch included), so
  hybrids can use the lexicon and LM.
- ``mode`` "transducer" (what "auto" means for transducers): greedy search at ``beam`` 1, else
  modified beam search (:mod:`asrbench.decoding.transducer_search`); no LM or lexicon yet.
- ``beam`` 1 without an LM or lexicon is greedy search; otherwise beam search.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asrbench.data.manifest import read_manifest, split_path
from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding import ctc_beam_kernel
from asrbench.decoding.attention_beam import AttentionBeamOptions, search_encoded
from asrbench.decoding.ctc_beam import CTCBeamOptions, Lexicon, ctc_prefix_beam_search
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.lm import load_lm
from asrbench.decoding.transducer_search import TransducerBeamOptions, greedy_search, modified_beam_search
from asrbench.decoding.word_fusion import WordFusion
from asrbench.errors import AsrbenchError
from asrbench.text import normalize

MODES = ("auto", "ctc", "attention", "transducer")
BACKENDS = ("native", "flashlight")


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 1
    mode: str = "auto"  # auto | ctc | attention | transducer
    lm: str = ""  # LM dir written by `asrbench lm train`
    lm_weight: float = 0.0  # times the LM's natural-log probability
    word_bonus: float = 0.0  # added per word (CTC beam search with an LM or lexicon)
    lexicon: str = ""  # "" | "train" (the run's training words) | a lexicon file
    ctc_weight: float | None = None  # attention models: joint scoring weight; None = the training ctc_weight
    length_bonus: float = 0.0  # attention beam search: added per token
    length_norm: bool = False  # attention beam search: rank ended hypotheses by score / length
    backend: str = "native"  # CTC beam search: native | flashlight (torchaudio's ctc_decoder)
    max_symbols: int = 1  # transducer beam search: tokens a hypothesis may emit on one encoder frame

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise AsrbenchError(f"--beam must be at least 1, not {self.beam}")
        if self.max_symbols < 1:
            raise AsrbenchError(f"--max-symbols must be at least 1, not {self.max_symbols}")
        if self.mode not in MODES:
            raise AsrbenchError(f"unknown decoding mode '{self.mode}' (valid: {', '.join(MODES)})")
        if self.backend not in BACKENDS:
            raise AsrbenchError(f"unknown CTC search backend '{self.backend}' (valid: {', '.join(BACKENDS)})")
        if self.ctc_weight is not None and not 0.0 <= self.ctc_weight <= 1.0:
            raise AsrbenchError(f"--ctc-weight must be in [0, 1], not {self.ctc_weight}")
        for name in ("lm_weight", "word_bonus", "length_bonus"):  # a nan scores every hypothesis as nan
            if not math.isfinite(getattr(self, name)):
                raise AsrbenchError(f"--{name.replace('_', '-')} must be a finite number, not {getattr(self, name)}")
        if self.lm_weight < 0:
            raise AsrbenchError(f"--lm-weight must not be negative, not {self.lm_weight}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_LM_WEIGHT = 0.5  # with an LM and no weight given


def given_options(**given) -> tuple[DecodeOptions, set[str]]:
    """What a user gave (``DecodeOptions`` fields; None: not given) -> the validated options, defaults
    for the rest, and the names given. An LM without a weight gets :data:`DEFAULT_LM_WEIGHT`, not
    counted as given: ``--tuned`` (:func:`asrbench.decoding.decode.resolve_options`) puts the tuned weight
    in its place, while given values always win over tuned ones."""
    explicit = {key for key, value in given.items() if value is not None}
    values = {key: given[key] for key in explicit}
    if values.get("lm") and "lm_weight" not in values:
        values["lm_weight"] = DEFAULT_LM_WEIGHT
    return DecodeOptions(**values), explicit


class Searcher:
    """Runs a model and a search: ``outputs`` (network) then ``search`` (token ids per utterance)."""

    def __init__(self, kind: str, outputs, search, description: dict, loss=None):
        self.kind = kind
        self.outputs = outputs
        self.search = search
        self.description = description  # what result.json records about the search
        # loss(outputs, targets, target_lengths): the model's loss from the same outputs, so that
        # scoring dev needs one network pass, not two; None: recognize calls compute_loss.
        self.loss = loss

    def __call__(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        return self.search(self.outputs(features, feature_lengths))


def describe_search(description: dict, checkpoint: str, tuned_from: dict | None) -> str:
    """The decoding options in force, in one line: the searcher's kind and every value it records."""
    values = ", ".join(f"{key} {value}" for key, value in description.items() if key != "kind" and value is not None)
    tuned = f"; tuned on {tuned_from['split']}: {', '.join(sorted(tuned_from['values']))}" if tuned_from else ""
    return f"{description['kind']}" + (f" ({values})" if values else "") + f", checkpoint {checkpoint}{tuned}"


def training_words(data_dir: str | Path) -> list[str]:
    """The words of a data dir's training transcripts, normalized as scored."""
    return sorted(
        {word for utt in read_manifest(split_path(Path(data_dir), "train")) for word in normalize(utt.text).split()}
    )


def load_lexicon(spec: str, tokenizer: Tokenizer, data_dir: str | Path | None):
    """``train`` (the data dir's training words) or a lexicon file -> a Lexicon trie."""
    if spec == "train":
        if data_dir is None:
            raise AsrbenchError("--lexicon train needs the run's data dir")
        return Lexicon.from_words(training_words(data_dir), tokenizer)
    return Lexicon.from_file(spec, tokenizer)


def word_knowledge(
    options: DecodeOptions, tokenizer: Tokenizer, data_dir, lm=None, lexicon=None, own_lexicon: bool = True
) -> tuple:
    """The LM and lexicon a beam search uses: those given (already loaded), else the ones
    ``options`` names; phone units spell no words by themselves, so without a lexicon their own
    (the tokenizer's pronunciations) is used when ``own_lexicon``. -> (lm, its metadata or None,
    lexicon, where the lexicon came from)."""
    lm_metadata = None
    if options.lm and lm is None:
        lm, lm_metadata = load_lm(options.lm)
    source = options.lexicon or None
    if lexicon is None and options.lexicon:
        lexicon = load_lexicon(options.lexicon, tokenizer, data_dir)
    if lexicon is None and tokenizer.writes_words_through_lexicon and own_lexicon:
        lexicon, source = Lexicon.from_words(tokenizer.lexicon_words(), tokenizer), "tokenizer"
    return lm, lm_metadata, lexicon, source


def ctc_searcher(model, tokenizer: Tokenizer, options: DecodeOptions, data_dir=None, lm=None, lexicon=None) -> Searcher:
    """Greedy or prefix beam search (lexicon, LM, flashlight) over ``model.ctc_log_probs``."""

    def outputs(features, feature_lengths):
        log_probs, lengths = model.ctc_log_probs(features, feature_lengths)
        return log_probs.float().cpu(), lengths.cpu()

    if options.beam == 1 and not options.lm and not options.lexicon:
        return Searcher("ctc_greedy", outputs, lambda out: ctc_greedy(*out), {"kind": "ctc_greedy"})

    lm, lm_metadata, lexicon, lexicon_source = word_knowledge(
        options, tokenizer, data_dir, lm, lexicon, own_lexicon=options.backend != "flashlight"
    )
    beam_options = CTCBeamOptions(
        beam=options.beam,
        lm_weight=options.lm_weight if lm is not None else 0.0,
        word_bonus=options.word_bonus,
        lexicon=lexicon is not None,
    )
    description = {
        "kind": "ctc_prefix_beam",
        "backend": options.backend,
        "beam": options.beam,
        "lm": str(options.lm) if options.lm else None,
        "lm_weight": beam_options.lm_weight,
        "word_bonus": options.word_bonus,
        "lexicon": lexicon_source,
        "lexicon_words": len(lexicon) if lexicon is not None else None,
        "token_top_k": beam_options.token_top_k,
        "token_beam": beam_options.token_beam,
        "blank_skip": beam_options.blank_skip,
        "score_beam": beam_options.score_beam,
    }
    if options.backend != "flashlight":  # which loop runs the search (the same hypotheses either way)
        # compiled with or without a lexicon or word bonus; an LM is called from the Python loop
        description["loop"] = "compiled" if lm is None and ctc_beam_kernel.available() else "python"
    if lm_metadata is not None:
        description["lm_order"], description["lm_unit"] = lm_metadata.get("order"), lm_metadata.get("unit")
    if options.backend == "flashlight":
        # Imported only here: it loads torchaudio's flashlight bindings (the optional extra).
        from asrbench.decoding.flashlight import FlashlightDecoder

        if options.lexicon:
            raise AsrbenchError("the flashlight backend takes its lexicon from the LM dir; drop --lexicon")
        decoder = FlashlightDecoder(tokenizer, beam_options, options.lm or None)

        def flashlight_search(out):
            return [hyps[0].token_ids if hyps else [] for hyps in decoder(*out)]

        return Searcher("ctc_flashlight", outputs, flashlight_search, description)

    def search(out):
        return [
            hyps[0].token_ids if hyps else []
            for hyps in ctc_prefix_beam_search(out[0], out[1], tokenizer, beam_options, lm=lm, lexicon=lexicon)
        ]

    return Searcher("ctc_prefix_beam", outputs, search, description)


def attention_searcher(model, options: DecodeOptions) -> Searcher:
    """Attention beam search (joint CTC/attention scoring with ``ctc_weight``) over ``model.encode``."""
    ctc_weight = options.ctc_weight
    if ctc_weight is None:
        ctc_weight = model.ctc_weight if model.ctc_head is not None else 0.0
    if ctc_weight > 0 and model.ctc_head is None:
        raise AsrbenchError("--ctc-weight needs a CTC branch; this model was trained with ctc_weight 0")
    beam_options = AttentionBeamOptions(
        beam=options.beam, ctc_weight=ctc_weight, length_bonus=options.length_bonus, length_norm=options.length_norm
    )
    description = {
        "kind": "attention_beam",
        "beam": options.beam,
        "ctc_weight": ctc_weight,
        "length_bonus": options.length_bonus,
        "length_norm": options.length_norm,
        "pre_beam_ratio": beam_options.pre_beam_ratio,
    }

    def outputs(features, feature_lengths):
        memory, lengths = model.encode(features, feature_lengths)
        ctc = model.ctc_head(memory) if ctc_weight > 0 else None
        return memory, lengths, ctc

    def search(out):
        return search_encoded(model, *out, beam_options)

    return Searcher("attention_beam", outputs, search, description)


def attention_model_searcher(
    model, tokenizer: Tokenizer, options: DecodeOptions, data_dir=None, lm=None, lexicon=None
) -> Searcher:
    """An attention model's decoder search (PyTorch or exported): attention beam search; the options
    that belong to CTC search are refused with the mode that takes them."""
    if options.lm or options.lexicon:
        raise AsrbenchError(
            "LM fusion and lexicons apply to CTC search: add --mode ctc to decode an attention "
            "model's CTC branch with them"
        )
    if options.backend != "native":
        raise AsrbenchError(f"--backend {options.backend} is a CTC search backend: add --mode ctc")
    return attention_searcher(model, options)


def transducer_searcher(
    model, tokenizer: Tokenizer, options: DecodeOptions, data_dir=None, lm=None, lexicon=None
) -> Searcher:
    """Greedy search (beam 1 without an LM or lexicon: up to the model's ``max_symbols_per_frame``
    symbols a frame) or modified beam search (``options.max_symbols`` symbols a frame, 1 by default),
    with word LM shallow fusion, a word bonus and a lexicon (:mod:`asrbench.decoding.word_fusion`),
    over ``model.encode``; the predictor and joiner run inside the search, so its "search" time includes them (as for
    attention beam search). Phone models always search within their lexicon, as in CTC search."""
    if options.backend != "native":
        raise AsrbenchError(f"--backend {options.backend} is a CTC search backend: add --mode ctc")

    def outputs(features, feature_lengths):
        return model.encode(features, feature_lengths)

    if options.beam == 1 and not options.lm and not options.lexicon and lm is None and lexicon is None:
        max_symbols = model.max_symbols_per_frame
        description = {
            "kind": "transducer_greedy",
            "beam": 1,
            "max_symbols_per_frame": max_symbols,
            "lm": None,
            "lexicon": None,
        }

        def greedy(out):
            return [hypothesis.token_ids for hypothesis in greedy_search(model, *out, max_symbols)]

        return Searcher("transducer_greedy", outputs, greedy, description)
    lm, lm_metadata, lexicon, lexicon_source = word_knowledge(options, tokenizer, data_dir, lm, lexicon)
    lm_weight = options.lm_weight if lm is not None else 0.0
    fused = lm is not None or lexicon is not None or options.word_bonus != 0.0
    beam_options = TransducerBeamOptions(
        beam=options.beam, length_norm=options.length_norm, max_symbols_per_frame=options.max_symbols
    )
    description = {
        "kind": "transducer_modified_beam",
        **asdict(beam_options),
        "lm": str(options.lm) if options.lm else None,
        "lm_weight": lm_weight,
        "word_bonus": options.word_bonus,
        "lexicon": lexicon_source,
        "lexicon_words": len(lexicon) if lexicon is not None else None,
    }
    if lm_metadata is not None:
        description["lm_order"], description["lm_unit"] = lm_metadata.get("order"), lm_metadata.get("unit")

    def search(out):
        extension = end = None
        if fused:  # fresh per batch: the fusion caches every prefix it scored
            fusion = WordFusion(tokenizer, lm, lexicon, lm_weight, options.word_bonus)
            extension, end = (lambda _, prefix, tokens: fusion.extension(prefix, tokens)), fusion.finish
        return [
            hypotheses[0].token_ids if hypotheses else []
            for hypotheses in modified_beam_search(model, *out, beam_options, score_extension=extension, score_end=end)
        ]

    return Searcher("transducer_modified_beam", outputs, search, description)


# --- tuning grids ---------------------------------------------------------------------------------

DEFAULT_LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
DEFAULT_WORD_BONUSES = (-1.0, 0.0, 1.0, 2.0)
DEFAULT_CTC_WEIGHTS = (0.0, 0.3, 0.5)
DEFAULT_LENGTH_BONUSES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class TuningRequest:
    """What ``asrbench tune`` was asked to search; None means the family's default values."""

    beams: tuple[int, ...] = (10,)
    lm: str = ""
    lm_weights: tuple[float, ...] | None = None
    word_bonuses: tuple[float, ...] | None = None
    ctc_weights: tuple[float, ...] | None = None
    length_bonuses: tuple[float, ...] | None = None
    lexicon: str = ""
    mode: str = "auto"


def ctc_tuning_grid(request: TuningRequest) -> list[DecodeOptions]:
    """Beam x LM weight x word bonus for CTC search (the weights only where an LM or lexicon makes
    them mean something)."""
    lm_weights = (
        request.lm_weights if request.lm_weights is not None else (DEFAULT_LM_WEIGHTS if request.lm else (0.0,))
    )
    word_bonuses = (
        request.word_bonuses
        if request.word_bonuses is not None
        else (DEFAULT_WORD_BONUSES if request.lm or request.lexicon else (0.0,))
    )
    return [
        DecodeOptions(
            beam=beam, mode=request.mode, lm=request.lm, lm_weight=weight, word_bonus=bonus, lexicon=request.lexicon
        )
        for beam, weight, bonus in itertools.product(request.beams, lm_weights, word_bonuses)
    ]


def attention_tuning_grid(request: TuningRequest, has_ctc: bool) -> list[DecodeOptions]:
    """Beam x joint CTC weight (only with a CTC branch) x length bonus for attention search."""
    ctc_weights = (
        request.ctc_weights if request.ctc_weights is not None else (DEFAULT_CTC_WEIGHTS if has_ctc else (0.0,))
    )
    length_bonuses = request.length_bonuses if request.length_bonuses is not None else DEFAULT_LENGTH_BONUSES
    return [
        DecodeOptions(beam=beam, mode=request.mode, ctc_weight=weight, length_bonus=bonus)
        for beam, weight, bonus in itertools.product(request.beams, ctc_weights, length_bonuses)
    ]


def transducer_tuning_grid(request: TuningRequest) -> list[DecodeOptions]:
    """Beam x LM weight x word bonus for transducer search (beam 1 alone: greedy), the weights
    only where an LM or lexicon makes them mean something, as for CTC."""
    return ctc_tuning_grid(request)
