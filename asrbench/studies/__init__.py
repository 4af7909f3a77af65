"""Stage 7, studies: several runs' decode results in, comparisons with honest uncertainty out.

Enters: run dirs and their ``decode/<split>/result.json`` (read through one loader), recipes for
sweeps. Leaves: ``compare`` tables (paired bootstrap CIs, refusing mixed test sets),
``bench`` sweeps (local processes or a Ray cluster: :mod:`asrbench.studies.ray_executor`), the
length / noise / data-size studies, their plots and the HTML report.
"""
