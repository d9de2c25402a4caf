"""The signals of a generation, one module each, all observing batches through ``Signal``.

Prediction side (a :class:`FeatureBatch`): :class:`DriftSignal` (data drift on the features,
prediction drift on the model output, see :class:`OutputColumns`), :class:`QualitySignal` and
:class:`EstimatedPerformanceSignal` (which also checks its estimate on labelled predictions).
Label side (a ``LabeledBatch``): :class:`ConceptSignal` and :class:`KpiSignal`. They share one
:class:`SignalContext`: the generation's alert book, rules and model version.
"""

from detectors.signals.base import FeatureBatch, Signal, SignalContext, Task
from detectors.signals.concept import ConceptSignal
from detectors.signals.drift import DriftSignal, feature_columns
from detectors.signals.estimated import EstimatedPerformanceSignal
from detectors.signals.kpis import KpiSignal
from detectors.signals.output import OutputColumns
from detectors.signals.quality import QualitySignal

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
