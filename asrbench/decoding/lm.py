"""N-gram language models for shallow fusion in CTC beam search.

Training is interpolated Kneser–Ney (Chen & Goodman 1998, modified: three discounts per order).
The model is stored as a standard ARPA file so that other decoders (flashlight/torchaudio
``ctc_decoder``, KenLM) can load the very same model our own beam search scores with.

Units: with ``unit="word"`` tokens are words; with ``unit="char"`` tokens are characters and the
space between words is a token too. ARPA files separate tokens by whitespace, so a space token
is written as ``<space>`` in the file and read back as ``" "``; in Python it is always ``" "``.

Scores returned by :class:`NGramLM` are natural logs (what a decoder adds to CTC log-probs);
the ARPA file holds log10, as the format requires.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from asrbench import fileio
from asrbench.data.manifest import read_manifest, split_path
from asrbench.errors import AsrbenchError
from asrbench.text import DEFAULT_NORMALIZER, normalize

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPACE = "<space>"
UNITS = ("word", "char")
DISCOUNTS = ("modified-kneser-ney", "kneser-ney")
# Used when the count-of-counts of an order give no valid discounts (tiny corpora, or orders
# where no n-gram was seen exactly 1, 2, 3 or 4 times); the same fallback as KenLM's.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
# log10 probability of a token the model cannot score at all (unknown, and no <unk> in the
# model), and of <s>, which is only ever a context.
FLOOR_LOG10 = -99.0
LM_FORMAT = "asrbench-lm-1"
_LN10 = math.log(10.0)
_CACHE_LIMIT = 1 << 20  # memoized (state, token) scores kept before the cache is dropped
_SECTION = re.compile(r"\\(\d+)-grams:")
_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")

State = tuple  # the last (at most order - 1) tokens that matter for the next prediction


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise AsrbenchError(f"unknown LM unit '{unit}' (valid: {', '.join(UNITS)})")


def _check_order(order: int) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise AsrbenchError(f"n-gram order must be a positive integer, got {order!r}")


def _ngram_line(line: str, order: int, unit: str, where: str) -> tuple[tuple[str, ...], float, float | None]:
    """One line of an ``order``-gram section -> (the n-gram, its log10 probability, its backoff or
    None); a malformed line raises :class:`AsrbenchError` naming ``where``."""
    fields = line.split()
    if len(fields) not in (order + 1, order + 2):
        raise AsrbenchError(
            f"{where}: a {order}-gram line needs a log10 probability, {order} "
            f"token(s) and an optional backoff; got {len(fields)} field(s)"
        )
    try:
        values = [float(field) for field in (fields[0], *fields[order + 1 :])]
    except ValueError:
        raise AsrbenchError(f"{where}: not a number in {line!r}") from None
    if any(math.isnan(value) for value in values):
        raise AsrbenchError(f"{where}: NaN in {line!r}")
    gram = tuple(" " if unit == "char" and token == SPACE else token for token in fields[1 : order + 1])
    return gram, values[0], values[1] if len(values) == 2 else None


def _numbered_lines(path: Path):
    """``(line number, stripped line)`` pairs, streamed (ARPA files can be gigabytes)."""
    with open(path, "rb") as handle:  # decoded line by line, so a bad byte has an exact line
        for line_number, raw in enumerate(handle, start=1):
            try:
                yield line_number, raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise AsrbenchError(f"{path}:{line_number}: not UTF-8 text ({err.reason})") from None


class NGramLM:
    """A backoff n-gram model with the ARPA semantics every toolkit shares.

    ``logprobs10`` maps each n-gram (a tuple of tokens) to its log10 probability, and
    ``backoffs10`` maps context n-grams to their log10 backoff weight (missing = 0). Scoring
    ``w`` after context ``h``: use ``p(h w)`` if stored, else ``backoff(h) * p(w | h[1:])``.
    """

    def __init__(
        self,
        order: int,
        logprobs10: dict[tuple[str, ...], float],
        backoffs10: dict[tuple[str, ...], float],
        unit: str = "word",
        discounts: dict[int, tuple[float, float, float]] | None = None,
    ) -> None:
        _check_order(order)
        _check_unit(unit)
        self.order = order
        self.unit = unit
        self.discounts = dict(discounts or {})
        self._log10 = logprobs10
        self._bow10 = backoffs10
        self.vocabulary = {gram[0] for gram in logprobs10 if len(gram) == 1}
        # Natural-log tables for the hot path. A history matters for the next token only if it
        # starts a stored n-gram or has a backoff weight; those are the states, each with a
        # backoff entry (0 if none was given), so "is this a state?" is one dict lookup.
        self._logprob = {gram: value * _LN10 for gram, value in logprobs10.items()}
        self._backoff: dict[tuple[str, ...], float] = {}
        for gram in logprobs10:
            for length in range(1, min(len(gram), order)):
                self._backoff.setdefault(gram[:length], 0.0)
        for gram, value in backoffs10.items():
            if len(gram) < order and (value or gram in self._backoff):
                self._backoff[gram] = value * _LN10
        self._unk = UNK if UNK in self.vocabulary else None
        self._start: State = (BOS,) if (BOS,) in self._backoff else ()
        self._cache: dict[tuple[State, str], tuple[float, State]] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}-grams {count}" for n, count in enumerate(self.ngram_counts, start=1))
        return f"NGramLM(order={self.order}, unit={self.unit!r}, {counts})"

    @property
    def ngram_counts(self) -> list[int]:
        """Number of stored n-grams per order, ``[unigrams, bigrams, ...]``."""
        counts = [0] * self.order
        for gram in self._log10:
            counts[len(gram) - 1] += 1
        return counts

    # ---- scoring (natural log) ------------------------------------------------------------

    def start(self) -> State:
        """The state after ``<s>``: where every sentence starts."""
        return self._start

    def score(self, state: State, token: str) -> tuple[float, State]:
        """``(ln p(token | state), next state)``.

        An unknown token is scored as ``<unk>``; a model without ``<unk>`` gives it
        ``FLOOR_LOG10`` (in natural log) and forgets the context. The next state is the longest
        suffix of the history that the model has as a context, so histories the model cannot
        tell apart share one state (and a beam search can merge them).
        """
        key = (state, token)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if (token,) not in self._logprob:
            if self._unk is None:
                result = (FLOOR_LOG10 * _LN10, ())
                self._remember(key, result)
                return result
            token = self._unk
        logprob = 0.0
        context = state
        while True:
            value = self._logprob.get(context + (token,))
            if value is not None:
                logprob += value
                break
            logprob += self._backoff.get(context, 0.0)
            context = context[1:]
        history = (state + (token,))[-(self.order - 1) :] if self.order > 1 else ()
        while history and history not in self._backoff:
            history = history[1:]
        result = (logprob, history)
        self._remember(key, result)
        return result

    def _remember(self, key: tuple[State, str], result: tuple[float, State]) -> None:
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result

    def finish(self, state: State) -> float:
        """``ln p(</s> | state)``: the cost of ending the sentence here."""
        return self.score(state, EOS)[0]

    def sentence_logprob(self, tokens) -> float:
        """Natural-log probability of a whole sentence, ``<s>`` and ``</s>`` implied."""
        state = self.start()
        total = 0.0
        for token in tokens:
            logprob, state = self.score(state, token)
            total += logprob
        return total + self.finish(state)

    def perplexity(self, sentences) -> float:
        """``exp(-mean ln p)`` over every token and each sentence's ``</s>`` (as SRILM counts)."""
        total, count = 0.0, 0
        for tokens in sentences:
            total += self.sentence_logprob(tokens)
            count += len(tokens) + 1
        if not count:
            raise AsrbenchError("perplexity of no sentences is undefined")
        return math.exp(-total / count)

    # ---- ARPA files -----------------------------------------------------------------------

    def _arpa_token(self, token: str) -> str:
        return SPACE if self.unit == "char" and token == " " else token

    def write_arpa(self, path: str | Path) -> None:
        """Write a standard ARPA file (log10), atomically. Floats use ``repr`` so reading the
        file back gives bit-identical scores."""
        by_order: list[list[tuple[str, ...]]] = [[] for _ in range(self.order)]
        for gram in self._log10:
            by_order[len(gram) - 1].append(gram)
        with fileio.atomic_open(path, "w") as handle:
            handle.write("\\data\\\n")
            for n, grams in enumerate(by_order, start=1):
                handle.write(f"ngram {n}={len(grams)}\n")
            for n, grams in enumerate(by_order, start=1):
                handle.write(f"\n\\{n}-grams:\n")
                for gram in sorted(grams):
                    fields = [repr(self._log10[gram]), " ".join(self._arpa_token(token) for token in gram)]
                    if gram in self._bow10:
                        fields.append(repr(self._bow10[gram]))
                    handle.write("\t".join(fields) + "\n")
            handle.write("\n\\end\\\n")

    @classmethod
    def from_arpa(cls, path: str | Path, unit: str = "word") -> NGramLM:
        """Read any valid ARPA file (ours, KenLM's, SRILM's). Text before ``\\data\\`` is
        ignored; malformed input raises :class:`AsrbenchError` naming file and line."""
        _check_unit(unit)
        path = Path(path)
        if not path.is_file():
            raise AsrbenchError(f"{path}: ARPA file not found")
        declared: dict[int, int] = {}
        logprobs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        section: str | int = "preamble"  # then "data", then 1, 2, ..., then "end"
        in_section = line_number = 0

        def check_complete(where: str) -> None:
            if isinstance(section, int) and in_section != declared[section]:
                raise AsrbenchError(
                    f"{where}: \\{section}-grams: has {in_section} entries, the header says {declared[section]}"
                )

        for line_number, line in _numbered_lines(path):
            where = f"{path}:{line_number}"
            if section == "preamble":
                section = "data" if line == "\\data\\" else section
                continue
            if not line:
                continue
            if line == "\\end\\":
                if section == "data" or section != len(declared):
                    raise AsrbenchError(f"{where}: \\end\\ before every n-gram section was read")
                check_complete(where)
                section = "end"
                break
            match = _SECTION.fullmatch(line)
            if match:
                order = int(match.group(1))
                if section == "data":
                    if not declared or sorted(declared) != list(range(1, len(declared) + 1)):
                        raise AsrbenchError(f"{where}: header must declare orders 1..N, got {sorted(declared)}")
                    expected = 1
                else:
                    assert isinstance(section, int)  # past the header: the order last read
                    check_complete(where)
                    expected = section + 1
                if order != expected:
                    raise AsrbenchError(f"{where}: expected section \\{expected}-grams:, got {line}")
                section, in_section = order, 0
                continue
            if line.startswith("\\"):
                raise AsrbenchError(f"{where}: unknown section {line!r}")
            if section == "data":
                match = _COUNT.fullmatch(line)
                if not match:
                    raise AsrbenchError(f"{where}: expected 'ngram N=COUNT' in the \\data\\ header, got {line!r}")
                order, count = int(match.group(1)), int(match.group(2))
                if order in declared:
                    raise AsrbenchError(f"{where}: order {order} declared twice")
                declared[order] = count
                continue
            assert isinstance(section, int)  # past the header: the order being read
            gram, logprob, backoff = _ngram_line(line, section, unit, where)
            if gram in logprobs:
                raise AsrbenchError(f"{where}: duplicate n-gram {' '.join(line.split()[1 : section + 1])!r}")
            logprobs[gram] = logprob
            if backoff is not None:
                backoffs[gram] = backoff
            in_section += 1
        if section == "preamble":
            raise AsrbenchError(f"{path}: not an ARPA file (no \\data\\ line)")
        if section != "end":
            raise AsrbenchError(f"{path}:{line_number + 1}: unexpected end of file (no \\end\\)")
        return cls(len(declared), logprobs, backoffs, unit=unit)


# ---- training -----------------------------------------------------------------------------


def _discounts(counts: dict, discount: str) -> tuple[float, float, float]:
    """Discounts for n-grams seen once, twice, three or more times, from count-of-counts.

    Chen & Goodman: Y = n1/(n1+2 n2), D_k = k - (k+1) Y n_{k+1}/n_k. With too little data
    some n_k are 0 or the estimates leave (0, k); then the order uses ``FALLBACK_DISCOUNTS``.
    """
    n = [0] * 5
    for count in counts.values():
        if count <= 4:
            n[count] += 1
    if discount == "kneser-ney":
        single = n[1] / (n[1] + 2 * n[2]) if n[1] and n[2] else 0.0
        return (single,) * 3 if 0.0 < single < 1.0 else (FALLBACK_DISCOUNTS[0],) * 3
    if not (n[1] and n[2] and n[3]):
        return FALLBACK_DISCOUNTS
    y = n[1] / (n[1] + 2 * n[2])
    once, twice, more = (k - (k + 1) * y * n[k + 1] / n[k] for k in (1, 2, 3))
    found = (once, twice, more)
    if all(0.0 < value < k for k, value in enumerate(found, start=1)):
        return found
    return FALLBACK_DISCOUNTS


def _adjusted_counts(raw: list[Counter]) -> list[dict]:
    """Kneser–Ney counts: raw counts at the highest order; below it, the number of distinct
    tokens seen before the n-gram (a word that only ever follows "SAN" is a poor guess in a new
    context however often it occurs). N-grams starting with <s> cannot be extended to the left,
    so they keep raw counts."""
    order = len(raw)
    adjusted: list[dict] = [{} for _ in range(order)]
    adjusted[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):  # n-grams of length n, from the (n+1)-grams
        continuation: Counter = Counter(gram[1:] for gram in raw[n])
        for gram, count in raw[n - 1].items():
            if gram[0] == BOS:
                continuation[gram] = count
        adjusted[n - 1] = dict(continuation)
    adjusted[0].pop((BOS,), None)  # <s> is a context, never predicted
    return adjusted


def train_ngram(
    sentences: list[list[str]], order: int, discount: str = "modified-kneser-ney", unit: str = "word"
) -> NGramLM:
    """Interpolated (modified) Kneser–Ney with ``<s>``/``</s>`` markers and ``<unk>``.

    p(w|h) = max(c(hw) - D(c), 0) / c(h·) + gamma(h) p(w|h[1:]), with gamma(h) the discounted
    mass, which becomes the ARPA backoff weight of h. Unigrams interpolate with a uniform
    distribution over the vocabulary (without <s>), which is where <unk>'s probability comes from.
    """
    _check_order(order)
    _check_unit(unit)
    if discount not in DISCOUNTS:
        raise AsrbenchError(f"unknown discount '{discount}' (valid: {', '.join(DISCOUNTS)})")
    if not sentences:
        raise AsrbenchError("cannot train a language model on no sentences")
    raw: list[Counter] = [Counter() for _ in range(order)]
    for tokens in sentences:
        padded = (BOS, *tokens, EOS)
        for n in range(1, order + 1):
            counter = raw[n - 1]
            for start in range(len(padded) - n + 1):
                counter[padded[start : start + n]] += 1
    for (token,) in raw[0]:
        space_ok = unit == "char" and token == " "
        if not isinstance(token, str) or not token or (not space_ok and (token.split() != [token])):
            raise AsrbenchError(f"invalid {unit} token {token!r} (empty or containing whitespace)")
    if raw[0][(BOS,)] != len(sentences) or raw[0][(EOS,)] != len(sentences):
        raise AsrbenchError(f"sentences must not contain the markers {BOS} or {EOS} themselves")

    adjusted = _adjusted_counts(raw)
    discounts = {n: _discounts(adjusted[n - 1], discount) for n in range(1, order + 1)}

    def discounted(count: int, n: int) -> float:
        return discounts[n][min(count, 3) - 1]

    unigrams = adjusted[0]
    vocabulary_size = len(unigrams) + (0 if (UNK,) in unigrams else 1)
    total = sum(unigrams.values())
    uniform = sum(discounted(count, 1) for count in unigrams.values()) / total / vocabulary_size
    probs = {gram: (count - discounted(count, 1)) / total + uniform for gram, count in unigrams.items()}
    probs.setdefault((UNK,), uniform)
    gammas: dict[tuple[str, ...], float] = {}
    for n in range(2, order + 1):
        totals: dict[tuple[str, ...], float] = defaultdict(float)
        masses: dict[tuple[str, ...], float] = defaultdict(float)
        for gram, count in adjusted[n - 1].items():
            totals[gram[:-1]] += count
            masses[gram[:-1]] += discounted(count, n)
        for gram, count in adjusted[n - 1].items():
            context = gram[:-1]
            # Every suffix of a seen n-gram was seen after something, so it is stored below.
            lower = probs[gram[1:]]
            probs[gram] = (count - discounted(count, n) + masses[context] * lower) / totals[context]
        for context, context_total in totals.items():
            gammas[context] = masses[context] / context_total
    logprobs10 = {gram: math.log10(value) for gram, value in probs.items()}
    logprobs10[(BOS,)] = FLOOR_LOG10
    backoffs10 = {gram: math.log10(value) for gram, value in gammas.items()}
    return NGramLM(order, logprobs10, backoffs10, unit=unit, discounts=discounts)


# ---- LM dirs ------------------------------------------------------------------------------


def _sentences(utterances, unit: str, normalizer: str) -> list[list[str]]:
    texts = [normalize(utt.text, normalizer) for utt in utterances]
    return [text.split() if unit == "word" else list(text) for text in texts if text]


def train_lm(
    data_dir: str | Path,
    out_dir: str | Path,
    order: int = 3,
    unit: str = "word",
    normalizer: str = DEFAULT_NORMALIZER,
    discount: str = "modified-kneser-ney",
) -> dict:
    """Train on ``data_dir/train.jsonl`` and write ``lm.arpa``, ``lexicon.txt`` and ``lm.json``.

    Only the training split is learned from: dev.jsonl, when present, is scored to report a
    perplexity, and test.jsonl is never opened. Texts go through the same normalizer as scoring,
    so LM tokens match what the acoustic model is asked to produce. ``lexicon.txt`` spells each
    training word as characters (``HELLO\\tH E L L O``), the flashlight/torchaudio format.
    ``lm.json`` is written last: a dir with it is complete.
    """
    _check_unit(unit)
    _check_order(order)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    train_path = split_path(data_dir, "train")
    utterances = read_manifest(train_path)
    sentences = _sentences(utterances, unit, normalizer)
    if not sentences:
        raise AsrbenchError(f"{train_path}: no text left after '{normalizer}' normalization")
    lm = train_ngram(sentences, order, discount=discount, unit=unit)
    words = sorted({word for utt in utterances for word in normalize(utt.text, normalizer).split()})

    dev_perplexity = dev_oov_rate = None
    dev_sentences = 0
    dev_path = data_dir / "dev.jsonl"
    if dev_path.is_file():
        dev = _sentences(read_manifest(dev_path), unit, normalizer)
        if dev:
            dev_sentences = len(dev)
            dev_perplexity = lm.perplexity(dev)
            dev_tokens = [token for tokens in dev for token in tokens]
            dev_oov_rate = sum(token not in lm.vocabulary for token in dev_tokens) / max(len(dev_tokens), 1)

    lm.write_arpa(out_dir / "lm.arpa")
    fileio.write_text(out_dir / "lexicon.txt", "".join(f"{word}\t{' '.join(word)}\n" for word in words))
    metadata = {
        "format": LM_FORMAT,
        "order": order,
        "unit": unit,
        "discount": discount,
        "discounts": {str(n): list(values) for n, values in lm.discounts.items()},
        "normalizer": normalizer,
        "data_dir": str(data_dir.resolve()),
        "train_manifest_sha256": hashlib.sha256(train_path.read_bytes()).hexdigest(),
        "sentences": len(sentences),
        "skipped_empty": len(utterances) - len(sentences),
        "tokens": sum(len(tokens) for tokens in sentences),
        "vocabulary_size": len(lm.vocabulary),
        "lexicon_words": len(words),
        "ngram_counts": {str(n): count for n, count in enumerate(lm.ngram_counts, start=1)},
        "train_perplexity": lm.perplexity(sentences),
        "dev_sentences": dev_sentences,
        "dev_perplexity": dev_perplexity,
        "dev_oov_rate": dev_oov_rate,
    }
    fileio.write_json(out_dir / "lm.json", metadata)
    return metadata


def load_lm(lm_dir: str | Path) -> tuple[NGramLM, dict]:
    """Read an LM dir written by :func:`train_lm`: ``(model, metadata)``."""
    lm_dir = Path(lm_dir)
    meta_path = lm_dir / "lm.json"
    if not lm_dir.is_dir():
        raise AsrbenchError(f"{lm_dir}: LM dir not found")
    if not meta_path.is_file():
        raise AsrbenchError(f"{lm_dir}: not an LM dir (no lm.json; make one with `asrbench lm train`)")
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AsrbenchError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != LM_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise AsrbenchError(f"{meta_path}: format {found!r} is not an asrbench LM ('{LM_FORMAT}')")
    lm = NGramLM.from_arpa(lm_dir / "lm.arpa", unit=metadata.get("unit", "word"))
    if lm.order != metadata.get("order"):
        raise AsrbenchError(f"{lm_dir}: lm.arpa has order {lm.order}, lm.json says {metadata.get('order')}")
    return lm, metadata
