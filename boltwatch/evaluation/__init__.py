"""Evaluation, in one package: what the detectors are measured on and how.

* :mod:`boltwatch.evaluation.scenarios`: the simulator's bolt scenarios scored, beside the
  Grafana-style rule (``boltwatch evaluate``).
* :mod:`boltwatch.evaluation.field`: the held-out field fleets (``boltwatch evaluate --field``).
* :mod:`boltwatch.evaluation.machines`: machine series, scored by kind of fault.
* :mod:`boltwatch.evaluation.skab`: SKAB (real labelled industrial data), F1 and FAR.

* :mod:`boltwatch.evaluation.windowed`: the windowed scorer (windows around labelled anomalies,
  scaled-sigmoid reward of the first detection in a window, a cost per detection outside,
  threshold swept over the corpus, normalised between never firing (0) and perfect (100)).
* :mod:`boltwatch.evaluation.baselines`: NAB's windowed-Gaussian baseline, the null detector and
  chance level.
* :mod:`boltwatch.evaluation.univariate_eval`: the table of the univariate detector against them
  on SKAB's channels one at a time and on simulated machine series
  (``python -m boltwatch.evaluation.univariate_eval``).
"""

from boltwatch.evaluation.baselines import null_scores, random_scores, windowed_gaussian
from boltwatch.evaluation.windowed import (
    REWARD_LOW_FN,
    REWARD_LOW_FP,
    STANDARD,
    LabelledSeries,
    Profile,
    ScoringError,
    Sweep,
    WindowedScore,
    anomaly_windows,
    label_onsets,
    scaled_sigmoid,
    score_at,
    sweep,
)

__all__ = [
    "REWARD_LOW_FN",
    "REWARD_LOW_FP",
    "STANDARD",
    "LabelledSeries",
    "Profile",
    "ScoringError",
    "Sweep",
    "WindowedScore",
    "anomaly_windows",
    "label_onsets",
    "null_scores",
    "random_scores",
    "scaled_sigmoid",
    "score_at",
    "sweep",
    "windowed_gaussian",
]
