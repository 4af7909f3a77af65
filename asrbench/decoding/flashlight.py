"""The flashlight CTC beam-search decoder (torchaudio's ``ctc_decoder``), with our options and output.

A reference point for :mod:`asrbench.decoding.ctc_beam`: same inputs, same ``Hypothesis`` list.

Token mapping: flashlight gets our token list unchanged (so ids need no translation) except that
the tokenizer's word separator (``word_separator_id``: the space for characters) is renamed
``<space>`` and used as its word separator ("silence") token; that is also
how char-LM ARPA files write the space, so a char LM's n-grams match. A tokenizer without a space
gets an extra ``<space>`` column that can never win. Blank is ``<blank>``.

Modes:

* no LM dir: lexicon-free, no LM;
* word LM dir: lexicon decoder over ``lexicon.txt`` (words our tokenizer cannot spell are left
  out) with KenLM reading ``lm.arpa``. Flashlight cannot fuse a word LM without a lexicon, so
  this mode is always lexicon-constrained, whatever ``options.lexicon`` says. Each spelling ends
  with ``<space>``, so that, as in ours, words must be separated by a space: flashlight's
  separator is otherwise optional, and with a word bonus it then prefers spelling out "NINETEEN"
  as "NINE TEEN" or a run of one-letter words. To let the last word close, every utterance gets
  one extra frame where ``<space>`` has probability 1 (it adds nothing to any score);
* char LM dir: lexicon-free with KenLM scoring every token of ``lm.arpa``.

Option mapping: KenLM scores are log10 where ours are natural logs, so flashlight's ``lm_weight``
is ``options.lm_weight * ln(10)``, which makes the fused LM term identical. ``word_bonus`` is
flashlight's ``word_score`` (added per lexicon word) in the lexicon decoder and its ``sil_score``
(added per ``<space>``, so one fewer per utterance than ours) in the lexicon-free one.
``beam_size`` is ``options.beam``; ``beam_size_token`` is ``options.token_top_k + 1`` (flashlight
counts blank among the tokens); hypotheses more than ``BEAM_THRESHOLD`` below the best are
dropped; ``log_add`` is on, so merged hypotheses are summed as in ours. ``blank_skip`` and
``token_beam`` have no flashlight counterpart.

Scores differ from ours in meaning: flashlight keeps blank- and label-ending alignments of a
prefix as separate hypotheses and merges ones that share LM state and lexicon node (with an LM,
not only identical texts), so its ``score`` is neither a single text's summed probability nor
always below it; ``acoustic`` is its emitting-model score of the best merged path and ``lm`` its
LM score converted to natural log.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.ctc_beam import CHAR_LM_SPACE, CTCBeamOptions, Hypothesis, Lexicon
from asrbench.decoding.lm import load_lm
from asrbench.errors import AsrbenchError

BEAM_THRESHOLD = 25.0  # nats below the best hypothesis at which flashlight drops one
_NEVER = -1e9  # log-probability of the added <space> column when the tokenizer has no space
_LN10 = math.log(10.0)


def _ctc_decoder():
    # Imported only when a flashlight decoder is built: torchaudio (through torchaudio_compat, which
    # must come first) and the optional flashlight-text bindings are slow to load and may be absent.
    from asrbench import torchaudio_compat  # noqa: F401

    try:
        from torchaudio.models.decoder import ctc_decoder
    except (ImportError, RuntimeError) as err:
        raise AsrbenchError(f"flashlight decoder unavailable: {err} (pip install flashlight-text)") from None
    return ctc_decoder


class FlashlightDecoder:
    """Build once (loading the LM is the slow part), then call on batches of log-probs."""

    def __init__(
        self, tokenizer: Tokenizer, options: CTCBeamOptions = CTCBeamOptions(), lm_dir: str | Path | None = None
    ):
        if tokenizer.kind != "char":
            # Its lexicons are spelled in characters (lm dirs' lexicon.txt) and a token is a whole
            # LM unit: subword and phone models use the native search.
            raise AsrbenchError(
                f"--backend flashlight decodes character units; this model's are {tokenizer.kind} "
                "(use the native backend)"
            )
        self.tokenizer = tokenizer
        self.options = options
        self.vocab = len(tokenizer)
        separator = tokenizer.word_separator_id
        tokens = [CHAR_LM_SPACE if i == separator else token for i, token in enumerate(tokenizer.tokens)]
        if separator is None:
            tokens.append(CHAR_LM_SPACE)
        self.flashlight_vocab = len(tokens)
        unit = None
        if lm_dir is not None:
            _, metadata = load_lm(lm_dir)
            unit = metadata.get("unit", "word")
        self.unit = unit
        self.spellings: dict[str, list[int]] | None = None  # word -> token ids, in the lexicon mode
        self.sil = tokens.index(CHAR_LM_SPACE)
        settings = dict(
            tokens=tokens,
            nbest=options.beam,
            beam_size=options.beam,
            beam_size_token=min(options.token_top_k + 1, len(tokens)),
            beam_threshold=BEAM_THRESHOLD,
            lm_weight=options.lm_weight * _LN10,
            log_add=True,
            blank_token=tokenizer.tokens[tokenizer.blank_id],
            sil_token=CHAR_LM_SPACE,
        )
        ctc_decoder = _ctc_decoder()
        if unit == "word":
            assert lm_dir is not None  # unit comes from the LM dir's metadata
            lexicon = Lexicon.from_file(Path(lm_dir) / "lexicon.txt", tokenizer)
            self.spellings = {word: ids for word, ids in lexicon.spellings()}
            if not len(lexicon):
                raise AsrbenchError(f"{lm_dir}/lexicon.txt: no word can be spelled with the model's characters")
            with tempfile.TemporaryDirectory() as tmp:
                lexicon_path = Path(tmp) / "lexicon.txt"
                lines = [
                    f"{word}\t{' '.join(tokens[i] for i in ids)} {CHAR_LM_SPACE}\n" for word, ids in lexicon.spellings()
                ]
                lexicon_path.write_text("".join(lines), encoding="utf-8")
                self.decoder = ctc_decoder(
                    lexicon=str(lexicon_path),
                    lm=str(Path(lm_dir) / "lm.arpa"),
                    word_score=options.word_bonus,
                    **settings,
                )
        else:
            lm = str(Path(lm_dir) / "lm.arpa") if unit == "char" and lm_dir is not None else None
            self.decoder = ctc_decoder(lexicon=None, lm=lm, sil_score=options.word_bonus, **settings)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """(B, T, V) log-softmax outputs, (B,) lengths -> per utterance the n-best, best first."""
        if log_probs.dim() != 3 or log_probs.size(2) != self.vocab:
            raise AsrbenchError(f"flashlight: expected log_probs (B, T, {self.vocab}), got {tuple(log_probs.shape)}")
        emissions = log_probs.detach().to("cpu", torch.float32)
        frames = emissions.size(1)
        lengths = lengths.cpu().clamp(max=frames)
        closing = self.spellings is not None  # the extra frame that closes the last word
        if self.flashlight_vocab > self.vocab or closing:
            emissions = torch.nn.functional.pad(
                emissions, (0, self.flashlight_vocab - self.vocab, 0, int(closing)), value=_NEVER
            )
        if closing:
            rows = emissions[torch.arange(emissions.size(0)), lengths]  # (B, V'): the frame after each utterance
            rows.fill_(_NEVER)
            rows[:, self.sil] = 0.0
            emissions[torch.arange(emissions.size(0)), lengths] = rows
        emissions = emissions.contiguous()
        stride = emissions.stride(0) * emissions.element_size()
        results = []
        for b, length in enumerate(lengths.tolist()):
            if length == 0:
                results.append([Hypothesis([], 0.0, 0.0, 0.0)])
                continue
            found = self.decoder.decoder.decode(
                emissions.data_ptr() + b * stride, length + int(closing), self.flashlight_vocab
            )
            results.append([self._hypothesis(result) for result in found[: self.options.beam]])
        return results

    def _hypothesis(self, result) -> Hypothesis:
        if self.spellings is not None:
            # The words, spelled and joined by spaces: flashlight completes a word whose last two
            # letters repeat without the blank CTC needs between them ("all" from frames a l l),
            # so its frame tokens would collapse to a word it did not mean ("al").
            word_dict = self.decoder.word_dict
            separator_id = self.tokenizer.word_separator_id
            ids: list[int] = []
            for index in result.words:
                if index >= 0:
                    if ids:
                        assert separator_id is not None  # a character tokenizer that writes words has its space
                        ids.append(separator_id)
                    ids.extend(self.spellings[word_dict.get_entry(index)])
        else:
            # One token per frame plus the start and end <space> the decoder adds.
            ids, previous = [], None
            for token in list(result.tokens)[1:-1]:
                if token != previous and token != self.tokenizer.blank_id and token < self.vocab:
                    ids.append(token)
                previous = token
        acoustic = getattr(result, "emittingModelScore", None)
        if acoustic is None:
            acoustic = result.amScore
        return Hypothesis(ids, float(result.score), float(acoustic), float(result.lmScore) * _LN10)


def flashlight_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    tokenizer: Tokenizer,
    options: CTCBeamOptions = CTCBeamOptions(),
    lm_dir: str | Path | None = None,
) -> list[list[Hypothesis]]:
    """One-shot :class:`FlashlightDecoder`; build the decoder yourself to decode many batches."""
    return FlashlightDecoder(tokenizer, options, lm_dir)(log_probs, lengths)
