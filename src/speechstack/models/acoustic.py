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
from typing import Any, Literal

import numpy as np
from pydantic import Field

from speechstack.acoustic import FeatureSet, Standardiser
from speechstack.config import LightGBMParams, Strict
from speechstack.models import ModelContext, register_model

# LightGBM as a classifier of ~100 standardised features on a few thousand rows: deeper
# and faster than the stacker's defaults (LightGBMParams), still regularised.
CLASSIFIER_TREES: dict[str, Any] = {
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_child_samples": 10,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
}


class AcousticParams(Strict):
    feature_set: FeatureSet = "ComParE_2016"  # openSMILE functionals: 6,373 (ComParE),
    #   88 (eGeMAPS) or 62 (GeMAPS) per clip
    normalise: Literal["speaker", "global"] = "speaker"  # z-score each speaker's clips with
    #   their own statistics (speaker), or every clip with the training side's (global)
    augment_copies: int = Field(2, ge=0)  # training clips are also heard through the task's
    #   `augment` (noise, rooms, channels) this many times, each copy a speaker group of its own
    classifier: Literal["logistic", "lightgbm"] = "lightgbm"
    c: float = Field(0.1, gt=0)  # logistic: inverse L2 strength
    lightgbm: LightGBMParams = Field(default_factory=lambda: LightGBMParams(**CLASSIFIER_TREES))


class AcousticClassifier:
    """A fitted standardiser and classifier over clip features; picklable (``model.pkl``)."""

    def __init__(self, params: AcousticParams, context: ModelContext) -> None:
        self.params = params
        self.num_classes = context.num_classes
        self.standardiser: Standardiser | None = None
        self.estimator: Any = None

    def _estimator(self, seed: int) -> Any:
        if self.params.classifier == "lightgbm":
            import lightgbm

            return lightgbm.LGBMClassifier(
                objective="multiclass", random_state=seed, verbose=-1,
                **self.params.lightgbm.model_dump(),
            )  # fmt: skip
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params.c, max_iter=5000)

    def fit(
        self,
        features: np.ndarray,
        speakers: Sequence[str | None],
        targets: np.ndarray,
        seed: int = 0,
    ) -> AcousticClassifier:
        self.standardiser = Standardiser.fit(features, self.params.normalise == "speaker")
        self.estimator = self._estimator(seed)
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
