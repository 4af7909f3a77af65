"""``asrbench report``: one self-contained HTML page of runs and studies.

The page needs nothing at view time: CSS and JavaScript are inline, plots are PNGs and audio
clips are Ogg Vorbis, both embedded as ``data:`` URIs (or audio linked with ``--link-audio``).
It holds:

- the comparison table of ``compare`` (WER with its CI, ≈best, CER, speed, size, training time,
  and provenance: config hash, decoder, asrbench version, commit, torch, device), sortable;
- the Pareto plots (WER against size and against decoding speed) and the learning curves;
- the length study's breakdowns (duration, reference words, speaker) with CIs, and its plot;
- every study dir given (``study.json`` rows as a sortable table, its plots);
- an error browser: per run the ``--worst`` utterances with most word errors, their word
  alignment (substitutions, deletions, insertions coloured), an audio player and the CTC
  posteriorgram of that utterance (the CTC branch for hybrid and transducer models).

The plots and posteriorgrams need matplotlib (the ``plot`` extra); without it the page is still
written, with the tables, the breakdowns and the error browser, and a note where the plots go.

Every text that comes from files (transcripts, hypotheses, ids, speakers, paths, study values)
is HTML-escaped where it is written, and none goes into a script: the page's one script only
sorts tables and reads nothing but cell text and ``data-v`` attributes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch

from asrbench import fileio
from asrbench.data.audio import load_audio
from asrbench.data.manifest import read_manifest, split_path
from asrbench.errors import AsrbenchError
from asrbench.progress import console, progress_bar
from asrbench.runs import rundir
from asrbench.scoring import metrics
from asrbench.studies import compare, length, plots

MAX_CLIP_SECONDS = 20.0  # a longer utterance's clip is cut (the page says so)
PLOTS_LEFT_OUT = f"plots left out: matplotlib is not installed ({plots.INSTALL})"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}
.plots img{max-width:48%;margin:.5%}.plots img.wide{max-width:97%}
.utt{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.utt header{font-weight:600;margin-bottom:.4em}
.align span{display:inline-block;margin:0 .15em;padding:0 .2em;border-radius:3px}
.C{color:#333}.S{background:#ffe08a}.D{background:#f7a8a8;text-decoration:line-through}.I{background:#a8d8f7}
.legend span{padding:0 .4em;margin-right:.6em;border-radius:3px}
.muted{color:#777;font-size:.85em}
details>summary{cursor:pointer;font-weight:600;margin:.6em 0}
"""

# Sorts a table by the clicked header: numbers by their data-v attribute (or text), others as text.
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var descending = th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(descending ? 'sorted-desc' : 'sorted-asc');
      function key(row) {
        var cell = row.cells[column];
        var value = cell.getAttribute('data-v');
        if (value === null) { value = cell.textContent; }
        var number = parseFloat(value);
        return isNaN(number) || !/^\\s*-?[0-9.]/.test(value) ? [1, value.toLowerCase()] : [0, number];
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var order = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
        return descending ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def image(png: bytes, alt: str, css: str = "") -> str:
    kind = f' class="{esc(css)}"' if css else ""
    return f'<img{kind} alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(headers: list[str], rows: list[list[tuple[str, object]]], table_id: str = "") -> str:
    """A sortable table; each cell is (text, sort value or None); texts are escaped here."""
    head = "".join(f"<th>{esc(name)}</th>" for name in headers)
    body = []
    for row in rows:
        cells = []
        for text, value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            attribute = f' data-v="{esc(value)}"' if value is not None else ""
            kind = ' class="num"' if numeric else ""
            cells.append(f"<td{kind}{attribute}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    identifier = f' id="{esc(table_id)}"' if table_id else ""
    return f'<table class="sortable"{identifier}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- sections ------------------------------------------------------------------------------------


def _model_label(row: dict) -> str | None:
    """The model's name, and ``(external)`` for a system scored from its transcripts."""
    return f"{row.get('model')} ({row['system']})" if row.get("system") else row.get("model")


def comparison_section(rows: list[dict]) -> str:
    """The comparison table. Runs of different test sets are shown with their set and a warning, and
    ranked only within their set (``compare.collect(..., allow_mixed=True)``)."""
    headers = [
        "run",
        "model",
        "test set",
        "params",
        "WER %",
        "WER 95% CI",
        "≈best",
        "CER %",
        "RTFx",
        "train s",
        "epochs",
        "config hash",
        "decoder",
        "asrbench",
        "commit",
        "torch",
        "device",
    ]
    body = []
    for row in rows:
        env = row.get("environment") or {}
        body.append(
            [
                (row["run"], row["run"]),
                (_model_label(row), row.get("model")),
                (compare.test_set_label(row), compare.test_set_label(row)),
                (f"{row['params'] / 1e6:.2f}M" if row.get("params") else "–", row.get("params")),
                (_number(row.get("wer")), row.get("wer")),
                (metrics.format_ci(row.get("wer_ci")), None),
                (row.get("vs_best") or "–", None),
                (_number(row.get("cer")), row.get("cer")),
                (_number(row.get("rtfx"), 0), row.get("rtfx")),
                (_number(row.get("train_seconds"), 0), row.get("train_seconds")),
                (row.get("epochs"), row.get("epochs")),
                (row.get("config_hash"), None),
                (row.get("decoder"), None),
                (env.get("asrbench_version"), None),
                ((env.get("git_commit") or "")[:12], None),
                (env.get("torch_version"), None),
                (env.get("cpu") if env.get("device") == "cpu" else env.get("gpu") or env.get("device"), None),
            ]
        )
    described = compare.statistics_legend(rows) or ""
    external = f" {compare.EXTERNAL_LEGEND}" if any(row.get("system") for row in rows) else ""
    note = (
        f'<p class="muted">{esc(described)} Test set: a hash of the utterance ids and references, and their '
        f"count.{esc(external)} Click a header to sort.</p>"
    )
    sets = {compare.test_set_label(row) for row in rows}
    warning = (
        f"<p><strong>These runs were decoded on {len(sets)} different test sets</strong> "
        f"({esc(', '.join(sorted(sets)))}): each run is ranked only against runs of its own set.</p>"
        if len(sets) > 1
        else ""
    )
    return (
        f'<h2 id="comparison-table">Comparison ({esc(rows[0]["split"])})</h2>'
        + warning
        + table(headers, body, "comparison")
        + note
    )


def plots_section(rows: list[dict], scratch: Path) -> str:
    from asrbench.studies.plots import write_plots  # matplotlib (the plot extra) only when a report is made

    if not plots.available():
        return f'<h2>Pareto plots and learning curves</h2><p class="muted">{esc(PLOTS_LEFT_OUT)}.</p>'
    images = [
        image(path.read_bytes(), path.stem.replace("_", " "), "wide" if path.stem == "learning_curves" else "")
        for path in write_plots(rows, scratch)
    ]
    return '<h2>Pareto plots and learning curves</h2><div class="plots">' + "".join(images) + "</div>"


def length_section(run_dirs: list[Path], split: str, scratch: Path) -> str:
    parts = ['<h2 id="breakdowns">By utterance length, reference words and speaker</h2>']
    # A system scored from its transcripts against another reference file than a prepared manifest
    # has no durations: it is left out here (and said so).
    known = [run_dir for run_dir in run_dirs if length.read_decode(run_dir, split)[0].data_dir is not None]
    if len(known) < len(run_dirs):
        left_out = ", ".join(str(run_dir) for run_dir in run_dirs if run_dir not in known)
        parts.append(
            f'<p class="muted">Left out (no data dir to read durations from): {esc(left_out)}; score an '
            "external system against the data dir's manifest (e.g. data/x/test.jsonl) to have it here.</p>"
        )
    if not known:
        return "".join(parts)
    found = length.length_study(known, split)
    if plots.available():
        parts.append(image(length.plot_length(found, scratch / "wer_by_duration.png").read_bytes(), "WER by duration"))
    titles = {"duration": "duration", "words": "reference words", "speaker": "speaker"}
    for axis, title in titles.items():
        rows = [row for row in found["rows"] if row["axis"] == axis]
        if not rows:
            continue  # speakers not known: no speaker table
        body = [
            [
                (row["run"], row["run"]),
                (row["bin"], row["order"] if axis != "speaker" else row["bin"]),
                (row["utterances"], row["utterances"]),
                (row["words"], row["words"]),
                (_number(row["wer"]), row["wer"]),
                (metrics.format_ci(row["wer_ci"]), None),
            ]
            for row in rows
        ]
        parts.append(
            f"<details><summary>WER by {esc(title)}</summary>"
            + table(["run", title, "utterances", "words", "WER %", "95% CI"], body)
            + "</details>"
        )
    return "".join(parts)


def _cell_value(value) -> tuple[str, object]:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return metrics.format_ci(value), None
    if isinstance(value, float):
        return _number(value), value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)[:200], None
    return ("–" if value is None else str(value)), value if isinstance(value, (int, str)) else None


def study_section(directory: Path) -> str:
    """A study dir: its study.json rows (scalar columns) as a table, and its plots."""
    found = rundir.read_json(directory / "study.json")
    rows = found.get("rows") or []
    keys = []
    for row in rows:
        keys += [key for key in row if key not in keys and key not in ("pairs", "order")]
    body = [[_cell_value(row.get(key)) for key in keys] for row in rows]
    plots = "".join(image(path.read_bytes(), path.stem) for path in sorted(directory.glob("*.png")))
    return (
        f"<h2>Study: {esc(directory)}</h2>"
        + (f'<div class="plots">{plots}</div>' if plots else "")
        + f"<details open><summary>{len(rows)} rows</summary>"
        + table(keys, body)
        + "</details>"
    )


def alignment_html(score: metrics.UtteranceScore) -> str:
    spans = []
    for operation, ref, hyp in score.alignment:
        if operation == "C":
            spans.append(f'<span class="C">{esc(ref)}</span>')
        elif operation == "S":
            spans.append(f'<span class="S" title="reference: {esc(ref)}">{esc(hyp)}</span>')
        elif operation == "D":
            spans.append(f'<span class="D" title="deleted">{esc(ref)}</span>')
        else:
            spans.append(f'<span class="I" title="inserted">{esc(hyp)}</span>')
    return "".join(spans)


def clip(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Ogg Vorbis bytes of (at most :data:`MAX_CLIP_SECONDS` of) a waveform."""
    buffer = io.BytesIO()
    samples = waveform[: int(MAX_CLIP_SECONDS * sample_rate)]
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def posteriorgram(loaded, waveform: torch.Tensor, extractor) -> bytes | None:
    """PNG of the CTC posteriors (tokens that reach 5% somewhere, against encoder frames); None
    for a model without a CTC output."""
    from asrbench.studies.plots import _pyplot  # matplotlib is the plot extra's: imported when plotting

    plt = _pyplot()
    if getattr(loaded.model, "ctc_head", True) is None:  # an attention model or transducer with no CTC branch
        return None
    features = loaded.cmvn(extractor(waveform))
    with torch.no_grad():
        log_probs, lengths = loaded.model.ctc_log_probs(features[None], torch.tensor([features.size(0)]))
    probs = log_probs[0, : int(lengths[0])].exp().numpy().T  # (V, T')
    shown = [token for token in range(probs.shape[0]) if probs[token].max() >= 0.05]
    labels = [
        "∅" if token == loaded.tokenizer.blank_id else (loaded.tokenizer.piece(token) or "␣").replace(" ", "␣")
        for token in shown
    ]
    figure, axes = plt.subplots(figsize=(8, 0.14 * len(shown) + 1.2))
    axes.imshow(probs[shown], aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    axes.set_yticks(range(len(shown)), labels, fontsize=7)
    axes.set_xlabel("encoder frame", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=72)
    plt.close(figure)
    return buffer.getvalue()


def _audio_tag(utt, waveform: np.ndarray, sample_rate: int, link: bool) -> str:
    if link:
        return f'<audio controls preload="none" src="{esc(Path(utt.audio).resolve().as_uri())}"></audio>'
    cut = f" (first {MAX_CLIP_SECONDS:g} s)" if waveform.size > MAX_CLIP_SECONDS * sample_rate else ""
    data = base64.b64encode(clip(waveform, sample_rate)).decode()
    return f'<audio controls preload="metadata" src="data:audio/ogg;base64,{data}"></audio>{esc(cut)}'


def error_browser(run_dir: Path, split: str, worst: int, link_audio: bool, progress=None) -> str:
    """The ``worst`` utterances of one run (most word errors, then highest utterance WER): alignment,
    audio, CTC posteriorgram. ``progress()`` is called once the run is scored and its model loaded,
    then after each utterance."""
    progress = progress or (lambda: None)
    from asrbench.data.fbank import FeatureExtractor  # torchaudio mel banks: only for the posteriorgrams
    from asrbench.runs.checkpoint import load_model  # the model registry: only for the posteriorgrams

    result, rows = length.read_decode(run_dir, split)
    scores = metrics.score_utterances(
        [r["ref"] for r in rows], [r["hyp"] for r in rows], "none", [r["id"] for r in rows]
    )
    wrong = [score for score in scores if score.word_errors]
    ranked = sorted(wrong, key=lambda s: (-s.word_errors, -s.word_errors / max(1, s.words), s.id))[:worst]
    manifest_path = split_path(Path(result.data_dir), split) if result.data_dir else None  # none: no audio
    utterances = (
        {utt.id: utt for utt in read_manifest(manifest_path)}
        if manifest_path is not None and manifest_path.is_file()
        else {}
    )
    checkpoint = (result.decoder.checkpoint if result.decoder else None) or "best"
    checkpoint_path = rundir.checkpoint_path(run_dir, checkpoint, must_exist=False)  # gone: no posteriorgrams
    loaded = load_model(checkpoint_path) if checkpoint_path.is_file() else None
    extractor = FeatureExtractor(loaded.config.features) if loaded is not None else None
    parts = [
        f"<details><summary>{esc(run_dir)} ({esc(result.model)}): {len(ranked)} worst of "
        f"{len(scores)} utterances</summary>"
    ]
    given = {row["id"]: row["speaker"] for row in rows}  # the decode's copy of the manifest's speaker
    drawn = plots.available()  # posteriorgrams need the plot extra
    progress()
    for score in ranked:
        utt = utterances.get(score.id)
        speaker = given.get(score.id) or (utt.speaker if utt else None)  # never guessed from the id
        media = '<p class="muted">audio not found (the manifest or its audio moved)</p>'
        gram = ""
        if utt is not None and Path(utt.audio).is_file():
            rate = loaded.config.features.sample_rate if loaded is not None else 16000
            span = utt.duration if utt.offset else None
            waveform = load_audio(utt.audio, rate, utt.offset, span)
            media = _audio_tag(utt, waveform.numpy(), rate, link_audio)
            png = posteriorgram(loaded, waveform, extractor) if loaded is not None and drawn else None
            gram = (
                image(png, f"CTC posteriorgram of {score.id}")
                if png is not None
                else ""
                if not drawn
                else '<p class="muted">no CTC posteriorgram for this model</p>'
            )
        who = f"speaker {esc(speaker)}, " if speaker else ""
        parts.append(
            f'<div class="utt"><header>{esc(score.id)} <span class="muted">{who}'
            f"{score.word_errors} word errors ({score.substitutions} S, {score.deletions} D, {score.insertions} I) "
            f"in {score.words} words</span></header>"
            f'<div class="align">REF: {esc(score.ref)}</div><div class="align">HYP: {esc(score.hyp)}</div>'
            f'<div class="align">{alignment_html(score)}</div>{media}{gram}</div>'
        )
        progress()
    parts.append("</details>")
    return "".join(parts)


def is_study_dir(path: Path) -> bool:
    return (path / "study.json").is_file()


def select_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The run and study dirs of a shell glob such as ``runs/an4/*`` (logs and other files set
    aside); a single path is kept as given, for :func:`build_report` to name."""
    named = [Path(path) for path in paths]
    chosen = [path for path in named if compare.is_run_dir(path) or is_study_dir(path)]
    return chosen if len(named) > 1 and chosen else named


def find_browser() -> str | None:
    """A Chromium for screenshots: $ASRBENCH_CHROMIUM, else one on PATH; None: Playwright's own."""
    if os.environ.get("ASRBENCH_CHROMIUM"):
        return os.environ["ASRBENCH_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def take_screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of the top of ``page`` (headless Chromium driven by Playwright: the report extra)."""
    try:
        from playwright.sync_api import Error, sync_playwright  # the report extra: only for --screenshot
    except ImportError:
        raise AsrbenchError(
            "--screenshot needs Playwright: pip install 'asrbench[report]' (and a Chromium: "
            "apt-get install chromium, or `playwright install chromium`)"
        ) from None
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=find_browser())
            view = browser.new_page(viewport={"width": width, "height": height})
            view.goto(page.resolve().as_uri())
            view.screenshot(path=str(png))
            browser.close()
    except Error as err:
        raise AsrbenchError(f"--screenshot: Chromium failed ({str(err).splitlines()[0]})") from None
    return png


def build_report(
    inputs: Sequence[str | Path],
    split: str = "test",
    worst: int = 10,
    link_audio: bool = False,
    title: str = "asrbench report",
) -> str:
    """The page for run dirs and study dirs (a folder with a study.json); a user error names a bad input."""
    run_dirs, studies = [], []
    for path in map(Path, inputs):
        if is_study_dir(path):
            studies.append(path)
        elif compare.is_run_dir(path):
            run_dirs.append(path)
        elif not path.exists():
            raise AsrbenchError(f"{path}: no such run or study dir")
        else:
            raise AsrbenchError(f"{path}: neither a run dir (config.yaml, decode/) nor a study dir (study.json)")
    if not run_dirs and not studies:
        raise AsrbenchError("give at least one run dir or study dir")
    sections = []
    if not plots.available():
        console.print(
            f"[yellow]note[/yellow]: {PLOTS_LEFT_OUT}; the tables and the error browser are complete", soft_wrap=True
        )
    # The bar's steps: the comparison, its plots, the length breakdown, each study, and per run its
    # scoring (with its model loaded) and each of its worst utterances (audio, posteriorgram).
    before_errors = 3 * bool(run_dirs) + len(studies)
    with (
        tempfile.TemporaryDirectory(prefix="asrbench-report-") as name,
        progress_bar("part", unit="steps") as bar,
    ):
        task = bar.add_task("report", total=before_errors + len(run_dirs) * (1 + worst), part="comparison")
        scratch = Path(name)
        if run_dirs:
            rows = compare.collect(run_dirs, split, allow_mixed=True)  # shown with the set, ranked within it
            sections.append(comparison_section(rows))
            bar.update(task, advance=1, part="plots")
            sections.append(plots_section(rows, scratch))
            bar.update(task, advance=1, part="lengths")
            sections.append(length_section(run_dirs, split, scratch))
            bar.advance(task)
        for directory in studies:
            bar.update(task, part=f"study {directory.name}")
            sections.append(study_section(directory))
            bar.advance(task)
        if run_dirs:
            sections.append(
                f'<h2 id="errors">Error browser: the {worst} worst utterances per run</h2>'
                '<p class="legend"><span class="S">substitution</span><span class="D">deletion</span>'
                '<span class="I">insertion</span> Hover a word for the reference word.</p>'
            )
            for number, run_dir in enumerate(run_dirs):
                bar.update(task, part=f"worst of {run_dir.name}")
                sections.append(error_browser(run_dir, split, worst, link_audio, lambda: bar.advance(task)))
                bar.update(task, completed=before_errors + (number + 1) * (1 + worst))  # fewer wrong ones
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="muted">{len(run_dirs)} runs, {len(studies)} studies, split '
        f"{esc(split)}; made {esc(made)}.</p>" + "".join(sections) + f"<script>{SCRIPT}</script></body></html>"
    )


def write_report(inputs: Sequence[str | Path], out: str | Path, **options) -> Path:
    """Build the page and write it atomically to ``out``."""
    page = build_report(inputs, **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text(out, page)
    return out
