"""Decoding and validation: every bad input gets the right reason; the decoder agrees with the
JSON Schemas that producers are given."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.events import Source
from service.decode import (
    REASONS,
    DecodeError,
    DecodeLimits,
    decode_outcome,
    decode_prediction,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SOURCE = Source("predictions", 0, 7)
LIMITS = DecodeLimits(max_message_bytes=64 * 1024, max_features=50)


def schema(name: str) -> jsonschema.Draft202012Validator:
    doc = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc, format_checker=jsonschema.FormatChecker())


PREDICTION = schema("prediction.v1.json")
OUTCOME = schema("outcome.v1.json")


def good_prediction(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e1",
        "model_id": "m-1",
        "timestamp": "2026-11-27T10:00:00.500Z",
        "features": {"a": 1.5, "b": "x", "c": True, "d": None},
        "prediction": 1,
        "score": 0.8,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()


def reason_of(raw: bytes, decoder=decode_prediction) -> str:
    with pytest.raises(DecodeError) as info:
        decoder(raw, SOURCE, LIMITS)
    assert info.value.reason in REASONS
    return info.value.reason


def test_good_prediction_decodes_with_epoch_milliseconds() -> None:
    event = decode_prediction(orjson.dumps(good_prediction()), SOURCE, LIMITS)
    assert event.timestamp_ms == 1795773600500
    assert event.features == {"a": 1.5, "b": "x", "c": True, "d": None}
    assert event.score == 0.8
    assert event.source == SOURCE


def test_examples_validate_and_decode() -> None:
    examples = SCHEMAS / "examples"
    PREDICTION.validate(json.loads((examples / "prediction.json").read_text()))
    decode_prediction((examples / "prediction.json").read_bytes(), SOURCE, LIMITS)
    for name in ("outcome.json", "outcome-with-prediction.json"):
        OUTCOME.validate(json.loads((examples / name).read_text()))
        decode_outcome((examples / name).read_bytes(), SOURCE, LIMITS)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"event_id": "e", "score": NaN}', "non_finite_number"),
        (b'{"x": Infinity}', "non_finite_number"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b"x" * (64 * 1024 + 1), "too_large"),
        (None, "not_an_object"),
    ],
)
def test_undecodable_bytes_get_their_reason(raw: bytes | None, reason: str) -> None:
    assert reason_of(raw) == reason  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": _DROP}, "missing_field"),
        ({"features": _DROP}, "missing_field"),
        ({"timestamp": None}, "missing_field"),
        ({"event_id": 5}, "wrong_type"),
        ({"features": [1, 2]}, "wrong_type"),
        ({"features": {"a": {"nested": 1}}}, "wrong_type"),
        ({"features": {f"f{i}": i for i in range(51)}}, "too_many_features"),
        ({"timestamp": "yesterday"}, "invalid_value"),
        ({"timestamp": "2026-11-27T10:00:00"}, "invalid_value"),
        ({"timestamp": True}, "wrong_type"),
        ({"score": 1.5}, "invalid_value"),
        ({"score": "high"}, "wrong_type"),
        ({"model_id": "bad id/with slash"}, "invalid_value"),
        ({"prediction": [1]}, "wrong_type"),
        ({"schema_version": 2}, "unsupported_schema_version"),
        ({"segment": {"region": 3}}, "wrong_type"),
    ],
)
def test_invalid_predictions_get_their_reason(changes: dict[str, object], reason: str) -> None:
    raw = orjson.dumps(good_prediction(**changes))
    assert reason_of(raw) == reason
    if reason != "too_many_features":  # a configurable limit, not part of the contract
        # The schema rejects what the decoder rejects (the contract producers are given).
        assert not PREDICTION.is_valid(orjson.loads(raw))


def test_outcome_with_its_own_prediction_is_self_contained() -> None:
    raw = orjson.dumps(
        {"event_id": "e", "model_id": "m", "timestamp": 5, "label": "yes", "prediction": "no"}
    )
    outcome = decode_outcome(raw, SOURCE, LIMITS)
    assert outcome.self_contained and outcome.label == "yes"
    plain = decode_outcome(
        orjson.dumps({"event_id": "e", "model_id": "m", "timestamp": 5, "label": 0}), SOURCE, LIMITS
    )
    assert not plain.self_contained


def test_outcome_without_label_is_rejected() -> None:
    raw = orjson.dumps({"event_id": "e", "model_id": "m", "timestamp": 5})
    assert reason_of(raw, decode_outcome) == "missing_field"


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
candidate_events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(min_size=0, max_size=4), st.integers(0, 99)),
        "model_id": st.one_of(st.sampled_from(["m", "m-1", "a b", ""]), st.integers(0, 99)),
        "timestamp": st.one_of(
            st.integers(-5, 2**40),
            st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00", "nope"]),
        ),
        "features": st.one_of(
            st.dictionaries(st.text(max_size=3), json_scalars, max_size=4),
            st.lists(st.integers(0, 9), max_size=2),
        ),
        "prediction": json_scalars,
        "score": st.one_of(
            st.none(),
            st.floats(-1, 2),
            st.dictionaries(st.sampled_from(["a", "b"]), st.floats(0, 1), max_size=2),
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(candidate_events)
def test_decoder_accepts_exactly_what_the_schema_accepts(event: dict[str, object]) -> None:
    raw = orjson.dumps(event)
    try:
        decode_prediction(raw, SOURCE, LIMITS)
        accepted = True
    except DecodeError:
        accepted = False
    assert accepted == PREDICTION.is_valid(event)
