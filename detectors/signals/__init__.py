"""The signals of a generation, one module each, all observing batches through ``Signal``.

Prediction side (a :class:`FeatureBatch`): :class:`DriftSignal` (data drift on the features,
prediction drift on the model output, see :class:`OutputColumns`), :class:`QualitySignal` and
:class:`EstimatedPerformanceSignal` (which also checks its estimate on labelled predictions).
Label side (a ``LabeledBatch``): :class:`ConceptSignal` and :class:`KpiSignal`. They share one
:class:`SignalContext`: the generation's alert book, rules and model version.
"""

from driftline.detectors.signals.base import FeatureBatch, Signal, SignalContext, Task
from driftline.detectors.signals.concept import ConceptSignal
from driftline.detectors.signals.drift import DriftSignal, feature_columns
from driftline.detectors.signals.estimated import EstimatedPerformanceSignal
from driftline.detectors.signals.kpis import KpiSignal
from driftline.detectors.signals.output import OutputColumns
from driftline.detectors.signals.quality import QualitySignal

__all__ = [
    "ConceptSignal",
    "DriftSignal",
    "EstimatedPerformanceSignal",
    "FeatureBatch",
    "KpiSignal",
    "OutputColumns",
    "QualitySignal",
    "Signal",
    "SignalContext",
    "Task",
    "feature_columns",
]
