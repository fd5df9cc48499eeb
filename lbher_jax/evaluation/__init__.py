"""Evaluation: metrics (Eqs. 3-6), console / Markdown / CSV / JSON reports, figures.

`metrics` is numpy only; `report` writes the workdir outputs (results.json, predictions.csv,
report.md, Table 2); `plots` draws the figures with matplotlib's Agg canvas. Import the submodules
directly so that using the metrics never pulls in matplotlib.
"""
