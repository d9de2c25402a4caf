"""``OutputColumns``: the model-output column prediction drift tests, and its baseline.

The column is the score when the model gives one, else the prediction (numeric or
categorical). A training profile fixes it; without one, the first batch does.
"""

from __future__ import annotations

from collections.abc import Sequence

from driftline.detectors.batch import PredictionBatch
from driftline.detectors.columns import FeatureColumns, FeatureKind, column_of
from driftline.detectors.reference import ModelProfile, NumericProfile
from driftline.detectors.signals.base import FLOAT_OR_NONE, FeatureBatch

__all__ = ["OutputColumns"]


class OutputColumns:
    """The output column of each batch, for prediction drift.

    Parameters
    ----------
    kind
        ``{"score": "numeric"}`` or ``{"prediction": kind}``; None: learnt from the first batch.

    Examples
    --------
    >>> from driftline.detectors.events import Prediction, Source
    >>> batch = PredictionBatch.from_events(
    ...     [Prediction("1", "m", None, 5, {}, 1, 0.75, None, Source("p", 0, 5))]
    ... )
    >>> output = OutputColumns()
    >>> output.columns_of(batch)[1]
    {'score': 'numeric'}
    """

    def __init__(self, kind: dict[str, FeatureKind] | None = None) -> None:
        self._kind = kind

    @property
    def kind(self) -> dict[str, FeatureKind] | None:
        """The output column's name and kind (None until known)."""
        return self._kind

    @classmethod
    def from_profile(
        cls, profile: ModelProfile | None
    ) -> tuple[OutputColumns, ModelProfile | None]:
        """The output column and the prediction-drift baseline of a training profile: its score,
        else its prediction column. Without one, prediction drift learns from the first N events.
        """
        if profile is None:
            return cls(), None
        if profile.score is not None:
            return cls({"score": "numeric"}), ModelProfile(
                features={"score": profile.score}, n_rows=profile.n_rows
            )
        if profile.prediction is not None:
            kind: FeatureKind = (
                "numeric" if isinstance(profile.prediction, NumericProfile) else "categorical"
            )
            return cls({"prediction": kind}), ModelProfile(
                features={"prediction": profile.prediction}, n_rows=profile.n_rows
            )
        return cls(), None

    def __call__(self, batch: FeatureBatch) -> tuple[FeatureColumns, dict[str, FeatureKind]]:
        return self.columns_of(batch.predictions)

    def columns_of(
        self, predictions: PredictionBatch
    ) -> tuple[FeatureColumns, dict[str, FeatureKind]]:
        """The output column of ``predictions`` and its kind."""
        if self._kind is None:
            first_score, first = predictions.scores[0], predictions.predictions[0]
            if isinstance(first_score, float):
                self._kind = {"score": "numeric"}
            elif (
                isinstance(first, int | float)
                and not isinstance(first, bool)
                and not float(first).is_integer()
            ):
                self._kind = {"prediction": "numeric"}
            else:
                self._kind = {"prediction": "categorical"}
        kinds = self._kind
        # The one column built directly: no row dict per prediction.
        if "score" in kinds:
            scores: Sequence[object] = predictions.scores
            if not FLOAT_OR_NONE.issuperset(map(type, scores)):
                scores = [s if isinstance(s, float) else None for s in scores]
            return column_of("score", scores, "numeric"), kinds
        return column_of("prediction", predictions.predictions, kinds["prediction"]), kinds
