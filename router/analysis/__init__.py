"""The analysis of an experiment from its outcome log: pure numpy/scipy, no cluster.

`build_report(store, experiment)` is the entry point (`router.analysis.report`), and
`ExperimentReport` (`router.analysis.schema`) what it returns. The statistics live in `stats`
(A/B: ratio metrics by the delta method, CUPED, sample-ratio test, mSPRT, Holm, bootstrap
percentiles) and `arena` (Bradley–Terry leaderboard with bootstrap intervals and style control);
the decision rules in `verdict` (evidence in, decision and reason codes out), their English in
`prose`; `data` loads the log and `metrics` computes each metric per unit.
"""

from router.analysis.report import build_report
from router.analysis.schema import ExperimentReport

__all__ = ["ExperimentReport", "build_report"]
