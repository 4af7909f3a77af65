"""``asrbench study noise RUN...``: every run decodes the same corrupted copies of a split.

Conditions: clean (``--snr inf``), each noise source (:mod:`asrbench.data.corruption`: white, pink,
babble, a directory of recordings) at each finite SNR, and each reverberation time (``--reverb``).
An utterance's corruption is drawn from a generator seeded by (``--seed``, condition, utterance
id), so every model hears the same audio, in any order, and a re-run gives the same audio again:
each condition records the SHA-256 of its corrupted waveforms. Utterances are corrupted, turned
into features and decoded in batches of about ``batch_seconds`` of audio, so memory is bounded by
one batch (and the babble pool) whatever the split's size.

Per (run, condition): WER and CER with bootstrap CIs, the degradation against clean (absolute
points and relative %), and, per condition, the pairwise tests of ``compare`` between the runs
(``vs_best``: the best run, or whether another is significantly worse than it). The plot is WER
against SNR per noise (and against RT60), one line per run with its CI band.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from asrbench.data import corruption
from asrbench.data.audio import load_audio
from asrbench.data.fbank import FeatureExtractor
from asrbench.data.manifest import read_manifest, split_path
from asrbench.data.store import DTYPES
from asrbench.decoding.search_table import build_searcher
from asrbench.decoding.searchers import DecodeOptions
from asrbench.errors import AsrbenchError
from asrbench.progress import progress_bar
from asrbench.runs import rundir
from asrbench.runs.checkpoint import load_model
from asrbench.scoring import metrics, stats
from asrbench.studies.length import write_files

BABBLE_POOL = 200  # utterances of the split the babble is drawn from (the rest are not loaded)
FORMATS = ("table", "markdown", "csv", "json")


@dataclass(frozen=True)
class Condition:
    noise: str  # clean | white | pink | babble | a directory | reverb
    snr: float | None = None  # dB (noise conditions)
    rt60: float | None = None  # seconds (reverb)

    @property
    def name(self) -> str:
        if self.noise == "clean":
            return "clean"
        if self.noise == "reverb":
            return f"reverb {self.rt60:g} s"
        return f"{Path(self.noise).name if self.noise not in corruption.KINDS else self.noise} {self.snr:g} dB"


def parse_conditions(noises: str, snrs: str, reverb: str = "") -> list[Condition]:
    """Clean (when ``inf`` is among the SNRs), each noise at each finite SNR, each RT60."""
    try:
        levels = [float(value) for value in snrs.split(",") if value.strip()]
        rt60s = [float(value) for value in reverb.split(",") if value.strip()]
    except ValueError:
        raise AsrbenchError(f"--snr '{snrs}' / --reverb '{reverb}': give numbers, e.g. --snr inf,20,10,5,0") from None
    if any(not math.isfinite(rt60) or rt60 <= 0 for rt60 in rt60s):
        raise AsrbenchError(f"--reverb '{reverb}': reverberation times are positive seconds")
    if any(math.isnan(level) for level in levels):
        raise AsrbenchError(f"--snr '{snrs}': SNRs are numbers of dB, or inf for the clean split")
    conditions = [Condition("clean")] if any(math.isinf(level) and level > 0 for level in levels) else []
    for noise in [name.strip() for name in noises.split(",") if name.strip()]:
        if noise not in corruption.KINDS:
            corruption.noise_files(Path(noise))  # a directory of recordings, or one line naming it
        conditions += [Condition(noise, level) for level in levels if math.isfinite(level)]
    conditions += [Condition("reverb", rt60=rt60) for rt60 in rt60s]
    if not conditions:
        raise AsrbenchError("nothing to study: give --snr with inf or finite values, and --noise, or --reverb")
    return conditions


class _Runs:
    """The runs, loaded once: model, searcher, CMVN, and one feature extractor per feature config."""

    def __init__(self, run_dirs: list[Path], options: DecodeOptions, device: torch.device):
        self.dirs, self.loaded, self.searchers = [], [], []
        for run_dir in run_dirs:
            run_dir = rundir.require_run_dir(run_dir)
            loaded = load_model(run_dir / rundir.BEST)
            loaded.model.to(device).eval()
            self.dirs.append(run_dir)
            self.loaded.append(loaded)
            self.searchers.append(build_searcher(loaded.model, loaded.tokenizer, options, loaded.config.data.dir))
        rates = {loaded.config.features.sample_rate for loaded in self.loaded}
        if len(rates) > 1:
            raise AsrbenchError(f"the runs' models take different sample rates ({sorted(rates)}): study them apart")
        self.sample_rate = rates.pop()
        self.extractors: dict[str, FeatureExtractor] = {}
        for loaded in self.loaded:
            self.extractors.setdefault(repr(loaded.config.features), FeatureExtractor(loaded.config.features))
        self.device = device

    @torch.inference_mode()
    def decode(self, waveforms: list[np.ndarray]) -> list[list[str]]:
        """Hypotheses of every run for one batch of corrupted waveforms: [run][utterance]."""
        features = {
            key: extractor.batch([torch.from_numpy(w) for w in waveforms]) for key, extractor in self.extractors.items()
        }
        out = []
        for loaded, searcher in zip(self.loaded, self.searchers, strict=True):
            config = loaded.config.features
            pieces = [
                loaded.cmvn(torch.from_numpy(f.numpy().astype(DTYPES[config.dtype]).astype(np.float32)))
                for f in features[repr(config)]
            ]
            lengths = torch.tensor([p.size(0) for p in pieces])
            padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True).to(self.device)
            out.append([loaded.tokenizer.decode(list(ids)) for ids in searcher(padded, lengths.to(self.device))])
        return out


def _source(condition: Condition, utterances: list, sample_rate: int, seed: int) -> corruption.NoiseSource | None:
    if condition.noise in ("clean", "reverb"):
        return None
    if condition.noise == "babble":
        rng = corruption.generator(seed, "babble pool")
        chosen = sorted(rng.choice(len(utterances), size=min(BABBLE_POOL, len(utterances)), replace=False))
        pool: list[tuple[str | None, np.ndarray]] = [
            (_talker(utterances[i]), _audio(utterances[i], sample_rate)) for i in chosen
        ]
        return corruption.NoiseSource("babble", sample_rate, pool=pool)
    if condition.noise in corruption.KINDS:
        return corruption.NoiseSource(condition.noise, sample_rate)
    recordings = [load_audio(str(path), sample_rate).numpy() for path in corruption.noise_files(Path(condition.noise))]
    return corruption.NoiseSource("recordings", sample_rate, recordings=recordings)


def _talker(utterance) -> str:
    """Who babble must not be made of: the utterance's given speaker, else (speakers unknown) the
    utterance itself; never a speaker guessed from the id."""
    return f"speaker {utterance.speaker}" if utterance.speaker else f"utterance {utterance.id}"


def _audio(utterance, sample_rate: int) -> np.ndarray:
    return load_audio(
        utterance.audio, sample_rate, utterance.offset, utterance.duration if utterance.offset else None
    ).numpy()


def corrupt(speech: np.ndarray, condition: Condition, source, utterance, sample_rate: int, seed: int) -> np.ndarray:
    """One utterance under one condition, from its own seeded generator."""
    if condition.noise == "clean":
        return speech.astype(np.float32)
    rng = corruption.generator(seed, condition.name, utterance.id)
    if condition.noise == "reverb":
        assert condition.rt60 is not None  # a reverb condition has its RT60 (parse_conditions)
        return corruption.reverberate(speech, condition.rt60, sample_rate, rng)
    noise = source.sample(speech.size, rng, _talker(utterance))
    assert condition.snr is not None  # a noise condition has its SNR (parse_conditions)
    return corruption.mix(speech, noise, condition.snr, sample_rate)


def _batches(utterances: list, seconds: float) -> list[list[int]]:
    batches, current, total = [], [], 0.0
    for index, utterance in enumerate(utterances):
        current.append(index)
        total += utterance.duration
        if total >= seconds:
            batches.append(current)
            current, total = [], 0.0
    return batches + ([current] if current else [])


def noise_study(
    run_dirs: Sequence[str | Path],
    conditions: list[Condition],
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    options: DecodeOptions | None = None,
    device: str = "cpu",
    batch_seconds: float = 60.0,
    resamples: int = stats.DEFAULT_RESAMPLES,
    alpha: float = stats.DEFAULT_ALPHA,
) -> dict:
    """Decode ``split`` (the first run's data dir, or ``data_dir``) under every condition with every run."""
    from asrbench.env import resolve_device  # torch.device from the option, as decode resolves it

    runs = _Runs([Path(r) for r in run_dirs], options or DecodeOptions(), resolve_device(device))
    data_dir = Path(data_dir) if data_dir else Path(runs.loaded[0].config.data.dir)
    utterances = read_manifest(split_path(data_dir, split))
    if not utterances:
        raise AsrbenchError(f"{split_path(data_dir, split)}: no utterances")
    references = [utt.text for utt in utterances]
    labels = [utt.speaker for utt in utterances]
    # Speakers resampled where every utterance has one (issue 31; docs/statistics.md), else utterances.
    speakers = labels if all(labels) and len(set(labels)) >= 2 else None
    batches = _batches(utterances, batch_seconds)
    rows, checksums = [], {}
    with progress_bar() as bar:
        task = bar.add_task("noise study", total=len(conditions) * len(batches))
        for condition in conditions:
            source = _source(condition, utterances, runs.sample_rate, seed)
            checksum = corruption.Checksum()
            hypotheses: list[list[str]] = [[] for _ in runs.dirs]
            for batch in batches:
                waveforms = []
                for index in batch:
                    noisy = corrupt(
                        _audio(utterances[index], runs.sample_rate),
                        condition,
                        source,
                        utterances[index],
                        runs.sample_rate,
                        seed,
                    )
                    checksum.update(noisy)
                    waveforms.append(noisy)
                for run, decoded in enumerate(runs.decode(waveforms)):
                    hypotheses[run].extend(decoded)
                bar.update(task, advance=1)
            checksums[condition.name] = checksum.hexdigest()
            rows += _score(
                runs, condition, references, hypotheses, checksums[condition.name], resamples, alpha, seed, speakers
            )
    _degradation(rows, resamples, seed, speakers)
    return {
        "kind": "noise",
        "split": split,
        "data_dir": str(data_dir),
        "seed": seed,
        "utterances": len(utterances),
        "conditions": [{**asdict(c), "name": c.name, "checksum": checksums[c.name]} for c in conditions],
        "decoder": runs.searchers[0].description,
        "resample": "speaker" if speakers else "utterance",
        "speakers": len(set(speakers)) if speakers else None,
        "rows": rows,
    }


def _score(
    runs: _Runs,
    condition: Condition,
    references: list[str],
    hypotheses: list[list[str]],
    checksum: str,
    resamples: int,
    alpha: float,
    seed: int,
    speakers: list | None = None,
) -> list[dict]:
    """Rows of one condition: every run's rates and CIs (speakers resampled with ``speakers``), and
    the pairwise tests between runs, Holm-corrected."""
    scores = [metrics.score_utterances(references, hyps) for hyps in hypotheses]
    errors = np.array([[s.word_errors for s in run_scores] for run_scores in scores], float)
    words = np.array([s.words for s in scores[0]], float)
    comparison = None
    if len(runs.dirs) > 1 and words.sum() > 0:
        comparison = stats.compare_systems(
            errors, words, [str(d) for d in runs.dirs], resamples, alpha=alpha, seed=seed, groups=speakers
        )
    rows = []
    for index, (run_dir, run_scores) in enumerate(zip(runs.dirs, scores, strict=True)):
        rates = metrics.summarize(run_scores).to_dict()
        intervals = metrics.confidence_intervals(run_scores, resamples, seed=seed, groups=speakers)
        system = comparison.systems[index] if comparison else None
        rows.append(
            {
                "run": str(run_dir),
                "model": runs.loaded[index].config.model.name,
                "condition": condition.name,
                "noise": condition.noise,
                "snr": condition.snr,
                "rt60": condition.rt60,
                "wer": rates["wer"],
                "wer_ci": intervals.get("wer_ci"),
                "cer": rates["cer"],
                "cer_ci": intervals.get("cer_ci"),
                "utterances": len(run_scores),
                "checksum": checksum,
                "vs_best": None
                if system is None
                else (
                    "best"
                    if system.best
                    else "not significantly worse"
                    if system.not_significantly_worse
                    else "significantly worse"
                ),
                "_errors": errors[index],
                "_words": words,
            }
        )  # for the degradation's CI; not written
    return rows


def _degradation(
    rows: list[dict], resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0, speakers: list | None = None
) -> None:
    """Each row's WER against the same run's clean WER: points, with a bootstrap CI of the paired
    difference (each utterance's noisy minus clean errors; speakers resampled with ``speakers``, else
    utterances), and relative % (None without a clean condition)."""
    clean = {row["run"]: row for row in rows if row["noise"] == "clean"}
    for row in rows:
        reference = clean.get(row["run"])
        base = None if reference is None else reference["wer"]
        row["degradation_points"] = None if base is None or row["wer"] is None else row["wer"] - base
        row["degradation_ci"] = None
        if reference is not None and row["degradation_points"] is not None and row["noise"] != "clean":
            difference = row["_errors"] - reference["_errors"]
            row["degradation_ci"] = list(stats.difference_ci(difference, row["_words"], resamples, seed, speakers))
        row["degradation_relative"] = None if not base or row["wer"] is None else 100.0 * (row["wer"] - base) / base
    for row in rows:
        row.pop("_errors", None)
        row.pop("_words", None)


def _degradation_cell(row: dict) -> str:
    if row["degradation_relative"] is None:
        return "-"
    interval = row.get("degradation_ci")
    shown = f"{interval[0]:+.1f} to {interval[1]:+.1f}; " if interval else ""
    return f"{row['degradation_points']:+.2f} ({shown}{row['degradation_relative']:+.0f}%)"


def _pivot(study: dict) -> tuple[list[str], list[str], dict]:
    runs = list(dict.fromkeys(row["run"] for row in study["rows"]))
    conditions = [condition["name"] for condition in study["conditions"]]
    cells = {(row["run"], row["condition"]): row for row in study["rows"]}
    return runs, conditions, cells


def _cell(row: dict) -> str:
    mark = {"best": " ★", "not significantly worse": " ≈"}.get(row.get("vs_best") or "", "")
    return f"{metrics.format_rate(row['wer'])} ({metrics.format_ci(row['wer_ci'])}){mark}"


LEGEND = (
    "WER % (95% bootstrap CI). Per condition: ★ the best run, ≈ not significantly worse than it "
    "(matched pairs), no mark: significantly worse."
)


def legend(study: dict) -> str:
    """The table's legend, naming how its CIs and tests resampled (studies before issue 31: utterances)."""
    if study.get("resample") == "speaker":
        return (
            f"WER % (95% CI: speaker-blocked bootstrap over the {study['speakers']} speakers, log-t interval; "
            "degradation: t interval of the paired difference). Per condition: ★ the best run, ≈ not "
            "significantly worse than it (speaker sign-flip test, Holm-corrected), no mark: significantly worse."
        )
    return (
        "WER % (95% CI: bootstrap over utterances). Per condition: ★ the best run, ≈ not significantly "
        "worse than it (matched pairs, Holm-corrected), no mark: significantly worse."
    )


def render(study: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(study, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        import csv

        buffer = io.StringIO()
        fields = [
            "run",
            "model",
            "condition",
            "noise",
            "snr",
            "rt60",
            "wer",
            "wer_ci",
            "cer",
            "degradation_points",
            "degradation_ci",
            "degradation_relative",
            "vs_best",
            "utterances",
            "checksum",
        ]
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            {**row, "wer_ci": json.dumps(row["wer_ci"]), "degradation_ci": json.dumps(row.get("degradation_ci"))}
            for row in study["rows"]
        )
        return buffer.getvalue()
    runs, conditions, cells = _pivot(study)
    if fmt == "markdown":
        lines = ["| run | model | " + " | ".join(conditions) + " |", "|---|---|" + "---:|" * len(conditions)]
        for run in runs:
            model = cells[(run, conditions[0])]["model"]
            lines.append(f"| {run} | {model} | " + " | ".join(_cell(cells[(run, c)]) for c in conditions) + " |")
        lines += ["", legend(study), ""]
        if any(row["degradation_points"] is not None for row in study["rows"]):
            noisy = [c for c in conditions if c != "clean"]
            lines += [
                "| run | " + " | ".join(f"{c}: +points (95% CI; rel. %)" for c in noisy) + " |",
                "|---|" + "---:|" * len(noisy),
            ]
            for run in runs:
                lines.append(f"| {run} | " + " | ".join(_degradation_cell(cells[(run, c)]) for c in noisy) + " |")
        return "\n".join(lines) + "\n"
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"noise study ({study['split']}, seed {study['seed']})", caption=legend(study))
        table.add_column("run")
        table.add_column("model")
        for condition in conditions:
            table.add_column(condition, justify="right")
        for run in runs:
            table.add_row(run, cells[(run, conditions[0])]["model"], *(_cell(cells[(run, c)]) for c in conditions))
        console = Console(width=max(140, 30 * len(conditions)), record=True, file=io.StringIO())
        console.print(table)
        return console.export_text()
    raise AsrbenchError(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")


def plot_noise(study: dict, path: Path) -> Path:
    """WER against SNR, one panel per noise (clean at the left), and against RT60 for reverb."""
    from asrbench.studies.plots import _pyplot, _save  # matplotlib is the plot extra's: imported when plotting

    plt = _pyplot()
    rows = study["rows"]
    panels = list(dict.fromkeys(row["noise"] for row in rows if row["noise"] != "clean")) or ["clean"]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    runs = list(dict.fromkeys(row["run"] for row in rows))
    for axis, noise in zip(axes[0], panels, strict=True):
        for run in runs:
            mine = [row for row in rows if row["run"] == run and row["noise"] in (noise, "clean")]
            if noise == "reverb":
                mine.sort(key=lambda row: row["rt60"] or 0.0)
                xs = [row["rt60"] or 0.0 for row in mine]
            else:
                mine.sort(key=lambda row: -(row["snr"] if row["snr"] is not None else math.inf))
                xs = list(range(len(mine)))
            wers = [row["wer"] for row in mine]
            (line,) = axis.plot(xs, wers, marker="o", label=f"{mine[0]['model']} ({Path(run).name})")
            if all(row["wer_ci"] for row in mine):
                axis.fill_between(
                    xs,
                    [r["wer_ci"][0] for r in mine],
                    [r["wer_ci"][1] for r in mine],
                    alpha=0.12,
                    color=line.get_color(),
                )
        if noise != "reverb":
            labels = [("clean" if row["snr"] is None else f"{row['snr']:g}") for row in mine]
            axis.set_xticks(range(len(labels)), labels)
            axis.set_xlabel("SNR dB")
        else:
            axis.set_xlabel("RT60 s (0: clean)")
        axis.set_title(Path(noise).name)
        axis.set_ylabel(f"WER % ({study['split']}, 95% CI band)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    _save(figure, path)
    plt.close(figure)
    return path


def write_study(study: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """``study.json``, ``study.md`` and (with the plot extra) ``wer_by_snr.png`` in ``out_dir``."""
    return write_files(study, out_dir, render(study, "markdown"), plot_noise if plot else None, "wer_by_snr.png")
