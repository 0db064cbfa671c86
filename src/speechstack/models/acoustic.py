"""``acoustic``: openSMILE functionals, standardised per speaker, into a linear or
gradient-boosted classifier.

Not a network: it is fitted once per fold (no epochs) by ``train.FeatureFoldRun`` on the
same folds as every family, and writes OOF and test predictions in the same run layout, so
the stacker, reports, pseudo labels and ``predict`` treat it like any other experiment. It
is the family that sees what the log-mel CNN normalises away (absolute level, the pitch
contour's range) and, standardised per speaker, how each clip departs from its speaker's
own voice: the strongest cue for emotion on unseen actors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from speechstack.acoustic import Standardiser
from speechstack.models import ModelContext, register_model
from speechstack.params.models import AcousticParams


class AcousticClassifier:
    """A fitted standardiser and classifier over clip features; picklable (``model.pkl``)."""

    def __init__(self, params: AcousticParams, context: ModelContext) -> None:
        self.params = params
        self.num_classes = context.num_classes
        self.standardiser: Standardiser | None = None
        self.estimator: Any = None

    def _estimator(self, seed: int, threads: int | None) -> Any:
        if self.params.classifier == "lightgbm":
            import lightgbm

            settings = self.params.lightgbm.model_dump()
            if threads is not None:
                settings["n_jobs"] = min(settings["n_jobs"], threads)
            return lightgbm.LGBMClassifier(
                objective="multiclass", random_state=seed, verbose=-1, **settings
            )
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params.c, max_iter=5000)

    def fit(
        self,
        features: np.ndarray,
        speakers: Sequence[str | None],
        targets: np.ndarray,
        seed: int = 0,
        threads: int | None = None,
    ) -> AcousticClassifier:
        """Fit the standardiser and the classifier. ``threads``: this process's share of
        the cores (a fold process beside others); LightGBM uses at most that many, since
        its OpenMP threads spin while they wait and, past the share, hold the cores the
        other folds' processes need."""
        self.standardiser = Standardiser.fit(features, self.params.normalise == "speaker")
        self.estimator = self._estimator(seed, threads)
        self.estimator.fit(self.standardiser.transform(features, speakers), targets)
        return self

    def predict_proba(self, features: np.ndarray, speakers: Sequence[str | None]) -> np.ndarray:
        """``(clips, num_classes)``: classes absent from the fitted targets get 0."""
        if self.standardiser is None:
            raise RuntimeError("the acoustic classifier is not fitted")
        seen = self.estimator.predict_proba(self.standardiser.transform(features, speakers))
        probabilities = np.zeros((features.shape[0], self.num_classes), dtype=np.float32)
        probabilities[:, np.asarray(self.estimator.classes_, dtype=np.int64)] = seen
        return probabilities

    @property
    def parameters(self) -> int:
        """Learned numbers: coefficients (logistic) or tree nodes (LightGBM)."""
        if hasattr(self.estimator, "coef_"):
            return int(self.estimator.coef_.size + self.estimator.intercept_.size)
        return int(self.estimator.booster_.trees_to_dataframe().shape[0])


@register_model(
    "acoustic",
    AcousticParams,
    tiny={"feature_set": "GeMAPSv01b"},
    trainer="features",
)
def build_acoustic(params: AcousticParams, context: ModelContext) -> AcousticClassifier:
    return AcousticClassifier(params, context)
