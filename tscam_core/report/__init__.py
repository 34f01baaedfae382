"""What docs/results.md is built from: evaluation runs, their per-image intervals, and its tables.

``scripts/make_results_doc.py`` runs the evaluations and writes the page; the pieces it puts
together live here, each with one job, so that the tests can check them on real small runs:

- ``runs``: one ``python -m tscam_core.evaluate`` command, run or reused from a folder of the same settings;
- ``thresholds``: a row's CAM threshold, chosen on a run of the val split (never on test);
- ``columns``: the per-image 0/1 column behind each figure, and its bootstrap interval;
- ``markdown``: table rows and number cells;
- ``tables``: the paper's tables from one run; ``table5``: the map variants and the CAM row;
- ``seeds``: Table 5 on a second draw of the benchmark; ``conventions``: what the reference
  conventions moved; ``methods_table``: every localization method with its cost.
"""
