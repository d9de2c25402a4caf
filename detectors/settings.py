"""Per-model monitoring settings: what ``ModelMonitor`` runs and with which thresholds.

Validated with pydantic so a bad config names the key and the problem. Every model inherits the
``defaults`` block of the service config; a model's own block overrides it key by key.
The defaults are calibrated by ``make quality`` (see ``bench/RESULTS.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TaskKind = Literal["auto", "classification", "regression"]
DetectorName = Literal["adwin", "ddm", "eddm", "hddm_a", "hddm_w", "fhddm", "kswin", "page_hinkley"]
ClassificationMetric = Literal[
    "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "positive_rate"
]
RegressionMetric = Literal["mae", "rmse", "mape", "r2"]
LabelMetric = Literal["label_coverage", "label_delay_p50_ms", "label_delay_p95_ms"]

# Metrics where larger is worse: their thresholds fire above the level.
HIGHER_IS_WORSE = frozenset(
    {"log_loss", "brier", "mae", "rmse", "mape", "label_delay_p50_ms", "label_delay_p95_ms"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConceptDriftSettings(_Strict):
    enabled: bool = True
    detector: DetectorName = "adwin"
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    loss: Literal["absolute", "squared"] = "absolute"
    """Regression error stream: absolute or squared error."""
    false_resolve_rate: float = Field(default=1e-6, gt=0, lt=0.5)
    """A firing concept-drift alert resolves when a CUSUM test establishes that the error rate is
    back at its rate before the change; while it stays degraded, the average run before a false
    resolve is at least 1 / false_resolve_rate labelled events (``detectors/recovery.py``)."""


class Threshold(_Strict):
    metric: ClassificationMetric | RegressionMetric | LabelMetric
    warning: float | None = None
    critical: float | None = None
    relative: bool = False
    """Levels are a change from the reference value (a drop for accuracy-like metrics)."""
    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    """One-sided confidence of the bound that must lie past a level before it fires, and back
    past it before it resolves (the reference's own sampling error included when relative)."""
    resolve_evaluations: int = Field(default=3, ge=1)
    """Consecutive evaluations whose bound is back past the level before a firing alert
    resolves."""
    min_samples: int = Field(default=200, ge=0)
    for_updates: int = Field(default=1, ge=1)
    cooldown: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_level(self) -> Threshold:
        if self.warning is None and self.critical is None:
            raise ValueError("needs at least one of 'warning' or 'critical'")
        if self.warning is not None and self.critical is not None:
            # Relative levels are sizes of a change; absolute ones are values of the metric.
            larger_is_worse = self.relative or self.metric in HIGHER_IS_WORSE
            if larger_is_worse and not self.critical > self.warning:
                raise ValueError(
                    f"'critical' ({self.critical}) must be above 'warning' ({self.warning})"
                    + (" (relative levels are sizes of a change)" if self.relative else "")
                )
            if not larger_is_worse and not self.critical < self.warning:
                raise ValueError(
                    f"'critical' ({self.critical}) must be below 'warning' ({self.warning}) "
                    f"for {self.metric}, where lower is worse"
                )
        return self


def _default_thresholds() -> list[Threshold]:
    return [
        Threshold(metric="accuracy", relative=True, warning=0.05, critical=0.10),
        Threshold(metric="rmse", relative=True, warning=0.25, critical=0.50),
    ]


class KpiSettings(_Strict):
    enabled: bool = True
    """False: no KPI window, reference or threshold (label-metric thresholds included) and no
    ``kpi_threshold`` alert. Label coverage and delay are still tracked for the KPI snapshot,
    whose model KPIs are then None and whose window is empty."""
    window: Literal["count", "time"] = "count"
    size: int = Field(default=1000, ge=10)
    duration_s: float | None = Field(default=None, gt=0)
    every: int = Field(default=50, ge=1)
    """Thresholds are evaluated every ``every`` labelled events."""
    reference_size: int = Field(default=2000, ge=10)
    """The first labelled events whose KPIs are the reference of relative thresholds."""
    thresholds: list[Threshold] = Field(default_factory=_default_thresholds)

    @model_validator(mode="after")
    def _time_window_has_duration(self) -> KpiSettings:
        if self.window == "time" and self.duration_s is None:
            raise ValueError("window 'time' needs 'duration_s'")
        if self.window == "count":
            for t in self.thresholds:
                if t.min_samples > self.size:
                    raise ValueError(
                        f"threshold on {t.metric} needs min_samples={t.min_samples} labels in a "
                        f"window of size={self.size}: it could never fire"
                    )
        return self


class DriftSettings(_Strict):
    enabled: bool = True
    reference: Literal["first_n", "profile", "sliding"] = "first_n"
    reference_size: int = Field(default=5000, ge=50)
    profile: str | None = None
    """Path of a profile made by ``driftline profile`` (reference 'profile')."""
    window: Literal["count", "time"] = "count"
    window_size: int = Field(default=1000, ge=50)
    window_duration_s: float | None = Field(default=None, gt=0)
    every: int = Field(default=250, ge=1)
    alpha: float = Field(default=1e-5, gt=0, lt=1)
    """Family-wise false-alarm probability of one evaluation, across all features."""
    correction: Literal["bonferroni", "holm", "benjamini_hochberg"] = "bonferroni"
    for_evaluations: int = Field(default=2, ge=1)
    """Consecutive drifted evaluations before an alert fires."""
    resolve_evaluations: int = Field(default=4, ge=1)
    """Consecutive evaluations consistent with the reference before a firing alert resolves."""
    resolve_p_value: float = Field(default=0.05, gt=0, lt=1)
    """An evaluation is consistent with the reference when the feature's own (uncorrected)
    p-value is at least this (and above its firing threshold): no evidence of any difference,
    not merely a lack of strong evidence."""

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        if self.reference == "profile" and not self.profile:
            raise ValueError(
                "reference 'profile' needs 'profile' (a file made by driftline profile)"
            )
        if self.window == "time" and self.window_duration_s is None:
            raise ValueError("window 'time' needs 'window_duration_s'")
        return self


class MultivariateDriftSettings(_Strict):
    enabled: bool = True
    """Test the numeric features jointly as well: a change in the rank correlation of any pair
    (Spearman, against the data-drift reference, on its window and cadence). Runs only while
    data drift does, with two or more numeric features."""
    false_alarm_rate: float = Field(default=1e-6, gt=0, lt=1)
    """Bound on the chance that one evaluation of a stationary stream flags a joint drift, over
    all pairs together (Bonferroni); the alert then needs ``data_drift.for_evaluations`` of them
    in a row."""
    min_samples: int = Field(default=200, ge=10)
    """Fewest complete rows (every numeric feature present) in the window and the reference
    for the test to run."""


class EstimatedPerformanceSettings(_Strict):
    enabled: bool = True
    """Estimate a classifier's accuracy from its scores alone (CBPE): the expected accuracy,
    precision, recall, F1 and ROC AUC of the window, before any label arrives. Runs on numeric
    scores (the probability of the positive class) or class-probability objects with the
    positive class."""
    warning: float | None = Field(default=0.03, gt=0, lt=1)
    """Drop of the expected accuracy below the reference's that raises a warning."""
    critical: float | None = Field(default=0.06, gt=0, lt=1)
    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    """One-sided confidence of the bound on the drop that must lie past a level to fire, and
    back past it to resolve."""
    reference_size: int = Field(default=5000, ge=10)
    """The first scored predictions whose expected metrics are the reference."""
    window_size: int = Field(default=1000, ge=10)
    every: int = Field(default=250, ge=1)
    min_samples: int = Field(default=200, ge=1)
    for_evaluations: int = Field(default=2, ge=1)
    resolve_evaluations: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _levels(self) -> EstimatedPerformanceSettings:
        if self.warning is None and self.critical is None:
            raise ValueError("needs at least one of 'warning' or 'critical'")
        w, c = self.warning, self.critical
        if w is not None and c is not None and not c > w:
            raise ValueError(
                f"'critical' ({c}) must be above 'warning' ({w}): levels are drops of the "
                "expected accuracy"
            )
        if self.min_samples > self.window_size:
            raise ValueError(
                f"min_samples={self.min_samples} scored predictions in a window of "
                f"window_size={self.window_size}: it could never be evaluated"
            )
        return self


class QualityLevels(_Strict):
    warning: float | None = None
    critical: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> QualityLevels:
        if self.warning is not None and self.critical is not None and self.critical <= self.warning:
            raise ValueError(
                f"'critical' ({self.critical}) must be above 'warning' ({self.warning})"
            )
        return self


class QualitySettings(_Strict):
    enabled: bool = True
    window_size: int = Field(default=500, ge=10)
    every: int = Field(default=100, ge=1)
    min_samples: int = Field(default=200, ge=1)
    null_rate: QualityLevels = QualityLevels(warning=0.05, critical=0.15)
    type_mismatch_rate: QualityLevels = QualityLevels(warning=0.01, critical=0.05)
    out_of_range_rate: QualityLevels = QualityLevels(warning=0.05, critical=0.20)
    unseen_category_rate: QualityLevels = QualityLevels(warning=0.05, critical=0.20)
    relative: bool = True
    """Levels are added to the reference rate, so a feature that is often null in the reference
    alerts only when it gets worse (and rates are judged once the reference is complete;
    ``false`` judges absolute rates from the first window)."""
    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    """One-sided confidence of the bound on a window's rate that must lie past a level to fire,
    and back past it to resolve."""
    resolve_evaluations: int = Field(default=3, ge=1)


class MonitorSettings(_Strict):
    task: TaskKind = "auto"
    """'auto' decides on the first labelled event: numeric non-integral labels mean regression."""
    positive_label: str | int | bool = 1
    concept_drift: ConceptDriftSettings = ConceptDriftSettings()
    kpis: KpiSettings = KpiSettings()
    data_drift: DriftSettings = DriftSettings()
    multivariate_drift: MultivariateDriftSettings = MultivariateDriftSettings()
    estimated_performance: EstimatedPerformanceSettings = EstimatedPerformanceSettings()
    prediction_drift: DriftSettings = DriftSettings()
    data_quality: QualitySettings = QualitySettings()
    segments: list[str] = Field(default_factory=list)
    """Segment keys to slice by (keys of the predictions' ``segment`` object): each value of
    each key gets its own concept-drift detector and KPI thresholds, on the labelled events of
    that value, with the alert contract of the whole model; its alerts carry ``segment``."""
    max_segments_per_key: int = Field(default=50, ge=1)
    """Values of a key judged on their own, first come; later ones are pooled as ``__other__``.
    The false-alarm control of every segment is tightened by the number of segments that can
    be judged, ``len(segments) * (max_segments_per_key + 1)``."""
    on_new_version: Literal["reset", "keep"] = "reset"
    """A new ``model_version`` starts a new generation (fresh references, baselines and detectors;
    the old version's firing alerts resolve as superseded), or, with ``keep``, goes on being
    judged against the old version's references."""

    @model_validator(mode="after")
    def _one_profile(self) -> MonitorSettings:
        if len(set(self.segments)) != len(self.segments) or "" in self.segments:
            raise ValueError(f"segments must be distinct non-empty keys, not {self.segments}")
        # One training profile per model serves data drift, prediction drift and quality.
        d, p = self.data_drift, self.prediction_drift
        if p.correction != "bonferroni":
            raise ValueError(
                "prediction_drift.correction has no effect: prediction drift tests one column "
                "(the score, or the predicted class), so there is nothing to correct for"
            )
        if d.reference == p.reference == "profile" and d.profile != p.profile:
            raise ValueError(
                "data_drift.profile and prediction_drift.profile must name the same file (one "
                "training profile per model holds its features, score and prediction)"
            )
        return self
