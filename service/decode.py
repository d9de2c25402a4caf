"""Decoding and validation of input events.

Hand-written checks mirror ``schemas/prediction.v1.json`` and ``schemas/outcome.v1.json``
(tests hold the two in agreement): running a JSON Schema validator per message would cost more than
the rest of the hot path together.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
import orjson
from msgspec import Meta

from driftline.detectors.events import Outcome, Prediction, Score, Source

SCHEMA_VERSION: Final = 1
MAX_ID_LENGTH: Final = 256
MAX_MODEL_ID_LENGTH: Final = 128
MAX_SEGMENT_VALUE_LENGTH: Final = 64
_MODEL_ID_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
)

# Dead-letter reasons: a closed set, because they are metric label values.
REASONS: Final = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "non_finite_number",
    "too_deep",
    "not_an_object",
    "unsupported_schema_version",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "too_many_features",
    "duplicate_event_id",
    "unmatched_outcome",
    "unknown_model",
    "model_limit",
    "processing_error",
)


class DecodeError(Exception):
    """A message the service cannot use. ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_message_bytes: int = 1_048_576
    max_features: int = 2_000


def parse_json(value: bytes | None, limits: DecodeLimits) -> dict[str, object]:
    if value is None:
        raise DecodeError("not_an_object", "message has no value (tombstone)")
    if len(value) > limits.max_message_bytes:
        raise DecodeError(
            "too_large", f"message is {len(value)} bytes, limit is {limits.max_message_bytes}"
        )
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _classify_json_error(value, exc) from None
    if not isinstance(doc, dict):
        raise DecodeError("not_an_object", f"event is a JSON {type(doc).__name__}, not an object")
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise DecodeError(
            "unsupported_schema_version",
            f"schema_version {version!r} is not supported (this service reads {SCHEMA_VERSION})",
        )
    return doc


def _classify_json_error(value: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    message = str(exc)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return DecodeError("invalid_utf8", f"not valid UTF-8 at byte {uexc.start}")
    if "recursion" in message.lower() or "depth" in message.lower():
        return DecodeError("too_deep", "JSON nesting exceeds the decoder's depth limit")
    if any(token in value for token in (b"NaN", b"Infinity")):
        return DecodeError("non_finite_number", "NaN and Infinity are not JSON numbers")
    return DecodeError("invalid_json", message[:200])


def decode_prediction(value: bytes | None, source: Source, limits: DecodeLimits) -> Prediction:
    doc = parse_json(value, limits)
    features = doc.get("features", _MISSING)
    if type(features) is not dict:
        if features is _MISSING:
            raise DecodeError("missing_field", "'features' is required")
        if not isinstance(features, dict):
            raise DecodeError("wrong_type", "'features' must be an object")
    if len(features) > limits.max_features:
        raise DecodeError(
            "too_many_features",
            f"event has {len(features)} features, limit is {limits.max_features}",
        )
    # One C-level pass over the value types; the per-feature loop only runs to name the culprit.
    if not _FEATURE_VALUE_TYPES.issuperset(map(type, features.values())):
        for name, feature in features.items():
            if feature is not None and not isinstance(feature, _FEATURE_TYPES):
                raise DecodeError(
                    "wrong_type", f"feature {name!r} must be a number, string, boolean or null"
                )
    segment = doc.get("segment")
    if segment is not None:
        segment = _check_segment(segment)
    # Fast paths accept the common well-formed values; anything else goes through the helpers,
    # which raise the same errors in the same order as a field-by-field check.
    event_id, model_id, model_version, timestamp = _envelope(doc)
    prediction = doc.get("prediction")
    if type(prediction) not in _LABEL_TYPES:
        prediction = _label(doc, "prediction")
    score = doc.get("score")
    if type(score) is not float or not 0.0 <= score <= 1.0:
        score = _score(score)
    # Positional: a frozen dataclass's keyword call costs a third more, per event.
    return Prediction(
        event_id, model_id, model_version, timestamp, features, prediction, score, segment, source
    )


def decode_outcome(value: bytes | None, source: Source, limits: DecodeLimits) -> Outcome:
    doc = parse_json(value, limits)
    event_id, model_id, model_version, timestamp = _envelope(doc)
    label = doc.get("label")
    if type(label) not in _LABEL_TYPES:
        label = _label(doc, "label")
    prediction = doc.get("prediction")
    if prediction is not None and type(prediction) not in _LABEL_TYPES:
        prediction = _label(doc, "prediction")
    score = doc.get("score")
    if score is not None and (type(score) is not float or not 0.0 <= score <= 1.0):
        score = _score(score)
    return Outcome(event_id, model_id, model_version, timestamp, label, prediction, score, source)


def _envelope(doc: dict[str, object]) -> tuple[str, str, str | None, int]:
    """event_id, model_id, model_version and timestamp (ms), common to both event types."""
    event_id = doc.get("event_id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH:
        event_id = _id(doc, "event_id", MAX_ID_LENGTH)
    model_id = _fast_model_id(doc)
    model_version = doc.get("model_version")
    if model_version is not None and (
        type(model_version) is not str or len(model_version) > MAX_MODEL_ID_LENGTH
    ):
        model_version = _optional_string(doc, "model_version")
    timestamp = doc.get("timestamp")
    if type(timestamp) is not int or timestamp < 0:
        timestamp = _timestamp_ms(doc)
    return event_id, model_id, model_version, timestamp


def _fast_model_id(doc: dict[str, object]) -> str:
    model_id = doc.get("model_id")
    if (
        type(model_id) is str
        and 0 < len(model_id) <= MAX_MODEL_ID_LENGTH
        and _MODEL_ID_CHARS.issuperset(model_id)
    ):
        return model_id
    return _model_id(doc)


_MISSING: Final = object()
_FEATURE_TYPES: Final = (int, float, str, bool)
# Exact types (what orjson produces) that need no further check; others take the careful path.
_FEATURE_VALUE_TYPES: Final = frozenset({int, float, str, bool, type(None)})
_LABEL_TYPES: Final = frozenset({int, float, str, bool})


def _required(doc: dict[str, object], key: str) -> object:
    value = doc.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise DecodeError("missing_field", f"{key!r} is required")
    return value


def _id(doc: dict[str, object], key: str, max_length: int) -> str:
    value = _required(doc, key)
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string")
    if not value or len(value) > max_length:
        raise DecodeError("invalid_value", f"{key!r} must have 1 to {max_length} characters")
    return value


def _model_id(doc: dict[str, object]) -> str:
    model_id = _id(doc, "model_id", MAX_MODEL_ID_LENGTH)
    if not _MODEL_ID_CHARS.issuperset(model_id):
        raise DecodeError("invalid_value", "'model_id' may use only letters, digits and . _ : -")
    return model_id


def _optional_string(doc: dict[str, object], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError("wrong_type", f"{key!r} must be a string")
    if len(value) > MAX_MODEL_ID_LENGTH:
        raise DecodeError("invalid_value", f"{key!r} is longer than {MAX_MODEL_ID_LENGTH}")
    return value


def _label(doc: dict[str, object], key: str) -> object:
    value = _required(doc, key)
    if not isinstance(value, _FEATURE_TYPES):
        raise DecodeError("wrong_type", f"{key!r} must be a string, number or boolean")
    return value


def _timestamp_ms(doc: dict[str, object]) -> int:
    value = _required(doc, "timestamp")
    if isinstance(value, bool):
        raise DecodeError("wrong_type", "'timestamp' must be an RFC 3339 string or epoch ms")
    if isinstance(value, int):
        if value < 0:
            raise DecodeError("invalid_value", "'timestamp' must not be negative")
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(
                "invalid_value", f"'timestamp' {value[:40]!r} is not an RFC 3339 date-time"
            ) from None
        if parsed.tzinfo is None:
            raise DecodeError("invalid_value", "'timestamp' must carry a UTC offset (RFC 3339)")
        return int(parsed.timestamp() * 1000)
    raise DecodeError("wrong_type", "'timestamp' must be an RFC 3339 string or epoch ms")


def _score(value: object) -> Score:
    if value is None:
        return None
    if isinstance(value, bool):
        raise DecodeError("wrong_type", "'score' must be a number or an object of numbers")
    if isinstance(value, int | float):
        return _probability(float(value), "'score'")
    if isinstance(value, dict):
        scores: dict[str, float] = {}
        for name, item in value.items():
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise DecodeError("wrong_type", f"'score.{name}' must be a number")
            scores[name] = _probability(float(item), f"'score.{name}'")
        return scores
    raise DecodeError("wrong_type", "'score' must be a number or an object of numbers")


def _probability(value: float, what: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DecodeError("invalid_value", f"{what} must be a probability in [0, 1]")
    return value


def _check_segment(segment: object) -> dict[str, str]:
    if not isinstance(segment, dict):
        raise DecodeError("wrong_type", "'segment' must be an object of strings")
    for name, item in segment.items():
        if not isinstance(item, str):
            raise DecodeError("wrong_type", f"'segment.{name}' must be a string")
        if len(item) > MAX_SEGMENT_VALUE_LENGTH:
            raise DecodeError(
                "invalid_value", f"'segment.{name}' is longer than {MAX_SEGMENT_VALUE_LENGTH}"
            )
    return segment


# -- the batch path ------------------------------------------------------------------------------
#
# msgspec decodes and validates each message into a typed struct in C. Its checks are at least as
# strict as the per-field checks above (a differential property test holds the two in agreement):
# whatever it refuses, or a check after it refuses, goes through ``decode_prediction`` /
# ``decode_outcome`` alone, so a dead letter's reason and detail are exactly theirs.

# msgspec reads integers of any size as int, orjson those beyond 64 bits as float (or refuses
# them): bounding msgspec's ints sends the rare others down the per-message path.
_Int = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
_Label = _Int | float | str | bool
_Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
_Score = _Probability | dict[str, _Probability] | None
_Version = Annotated[str, Meta(max_length=MAX_MODEL_ID_LENGTH)] | None
_EventId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
# The characters of a model_id are checked once per distinct id (``BatchDecoder``), not by a
# pattern per message: msgspec runs a pattern through Python's ``re``, about 1 us a message.
_ModelId = Annotated[str, Meta(min_length=1, max_length=MAX_MODEL_ID_LENGTH)]
_Timestamp = Annotated[int, Meta(ge=0, le=2**63 - 1)] | str
_SchemaVersion = Annotated[int, Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
_Segment = dict[str, Annotated[str, Meta(max_length=MAX_SEGMENT_VALUE_LENGTH)]] | None


class OutcomeDoc(msgspec.Struct, frozen=True, gc=False):
    """A decoded, validated outcome (``timestamp`` is epoch ms once ``decode_outcomes`` returns)."""

    event_id: _EventId
    model_id: _ModelId
    timestamp: _Timestamp
    label: _Label
    model_version: _Version = None
    prediction: _Label | None = None
    score: _Score = None
    schema_version: _SchemaVersion = SCHEMA_VERSION


class PredictionDoc(msgspec.Struct, frozen=True, gc=False):
    """A decoded, validated prediction (``timestamp`` is epoch ms once ``decode_predictions``
    returns; the feature count is checked there, against the configured limit)."""

    event_id: _EventId
    model_id: _ModelId
    timestamp: _Timestamp
    features: dict[str, _Int | float | str | bool | None]
    prediction: _Label
    model_version: _Version = None
    score: _Score = None
    segment: _Segment = None
    schema_version: _SchemaVersion = SCHEMA_VERSION


class BatchDecoder:
    """Decodes the values of a batch of messages of one role in one pass.

    ``decode_predictions`` and ``decode_outcomes`` return one decoded struct per value (``None``
    for a value that cannot be used) and the ``(position, DecodeError)`` of each unusable value,
    with the reason and detail the per-message decoders give.

    Examples
    --------
    >>> decoder = BatchDecoder(DecodeLimits())
    >>> good = b'{"event_id": "e1", "model_id": "m", "timestamp": 5, "label": 1}'
    >>> docs, errors = decoder.decode_outcomes([good, b"[1]"])
    >>> docs[0].label, docs[1], [(i, e.reason) for i, e in errors]
    (1, None, [(1, 'not_an_object')])
    """

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self._prediction = msgspec.json.Decoder(PredictionDoc)
        self._outcome = msgspec.json.Decoder(OutcomeDoc)
        # model_ids whose characters were checked (bounded: cleared when it grows past the cap).
        self._valid_ids: set[str] = set()

    def decode_predictions(
        self, values: list[bytes | None]
    ) -> tuple[list[Any], list[tuple[int, DecodeError]]]:
        return self._decode(
            values,
            self._prediction.decode,
            decode_prediction,
            self._rebuild,
            self.limits.max_features,
        )

    def decode_outcomes(
        self, values: list[bytes | None]
    ) -> tuple[list[Any], list[tuple[int, DecodeError]]]:
        return self._decode(values, self._outcome.decode, decode_outcome, self._rebuild, None)

    def _decode(
        self,
        values: list[bytes | None],
        fast: Callable[[bytes], Any],
        careful: Callable[[bytes | None, Source, DecodeLimits], Prediction | Outcome],
        rebuild: Callable[[Prediction | Outcome], Any],
        max_features: int | None,
    ) -> tuple[list[Any], list[tuple[int, DecodeError]]]:
        limits = self.limits
        docs: list[Any]
        try:
            if values and max(map(len, values)) > limits.max_message_bytes:  # type: ignore[arg-type]
                raise ValueError("a message is too large")
            docs = list(map(fast, values))  # type: ignore[arg-type]
        except (msgspec.DecodeError, TypeError, ValueError):
            docs = [None] * len(values)
            for i, value in enumerate(values):
                if value is not None and len(value) <= limits.max_message_bytes:
                    with contextlib.suppress(msgspec.DecodeError, ValueError):
                        docs[i] = fast(value)
        errors: list[tuple[int, DecodeError]] = []
        # Refused, over the feature limit, an RFC 3339 time, or a model_id with a character it
        # may not use: the per-message decoder has the last word. (Comprehensions: these run
        # once per message.)
        if max_features is None:
            doubtful = [i for i, d in enumerate(docs) if d is None or type(d.timestamp) is str]
        else:
            doubtful = [
                i
                for i, d in enumerate(docs)
                if d is None or type(d.timestamp) is str or len(d.features) > max_features
            ]
        invalid = self._invalid_ids({d.model_id for d in docs if d is not None})
        if invalid:
            bad = [i for i, d in enumerate(docs) if d is not None and d.model_id in invalid]
            doubtful = sorted({*doubtful, *bad})
        for i in doubtful:
            try:
                event = careful(values[i], _NOWHERE, limits)
            except DecodeError as exc:
                errors.append((i, exc))
                docs[i] = None
                continue
            docs[i] = rebuild(event)
        return docs, errors

    def _invalid_ids(self, model_ids: set[str]) -> set[str]:
        """Those of ``model_ids`` with a character a model_id may not use."""
        valid = self._valid_ids
        new = model_ids - valid
        if not new:
            return new
        invalid = {m for m in new if not _MODEL_ID_CHARS.issuperset(m)}
        if len(valid) > _MAX_VALID_IDS:
            valid.clear()
        valid.update(new - invalid)
        return invalid

    def _rebuild(self, event: Prediction | Outcome) -> Any:
        """The struct of an event the per-message decoder accepted (time as epoch ms). Besides
        RFC 3339 times, only integers beyond int64 take this way."""
        if isinstance(event, Prediction):
            return PredictionDoc(
                event.event_id,
                event.model_id,
                event.timestamp_ms,
                event.features,
                event.prediction,  # type: ignore[arg-type]  # checked by decode_prediction
                event.model_version,
                event.score,
                event.segment,
            )
        return OutcomeDoc(
            event.event_id,
            event.model_id,
            event.timestamp_ms,
            event.label,  # type: ignore[arg-type]  # checked by decode_outcome
            event.model_version,
            event.prediction,  # type: ignore[arg-type]
            event.score,
        )


_NOWHERE: Final = Source("", 0, 0)
_MAX_VALID_IDS: Final = 100_000
