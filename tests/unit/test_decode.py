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

from driftline.detectors.events import Source
from driftline.service.decode import (
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


# -- the batch decoder agrees with the per-message decoders ---------------------------------------

_ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 0.5, -0.0, 1.0000001, 1e308]),
    st.text(max_size=5),
)
_ODD = st.one_of(
    _ANY_SCALAR,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), _ANY_SCALAR, max_size=3),
)
_FIELD_VALUES = {
    "event_id": st.one_of(st.sampled_from(["e1", "", "x" * 256, "x" * 257, "é"]), _ODD),
    "model_id": st.one_of(
        st.sampled_from(["m-1", "m\n", "a b", "M.x_y:z", "m" * 128, "m" * 129, ""]), _ODD
    ),
    "model_version": st.one_of(st.sampled_from(["v1", "v" * 129, None]), _ODD),
    "timestamp": st.one_of(
        st.sampled_from(
            [
                0,
                -1,
                2**63,
                2**64,
                1.5,
                "2026-11-27T10:00:00Z",
                "2026-11-27T10:00:00",
                "not a time",
                True,
            ]
        ),
        st.integers(min_value=0, max_value=2**53),
        _ODD,
    ),
    "features": st.one_of(
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _ODD, max_size=4),
        st.dictionaries(st.text(max_size=3), _ANY_SCALAR, min_size=48, max_size=52),
        _ODD,
    ),
    "prediction": _ODD,
    "label": _ODD,
    "score": st.one_of(
        st.floats(min_value=-0.5, max_value=1.5, allow_nan=False),
        st.dictionaries(
            st.sampled_from(["0", "1"]), st.floats(min_value=-0.5, max_value=1.5), max_size=2
        ),
        _ODD,
    ),
    "segment": st.one_of(
        st.dictionaries(st.sampled_from(["r"]), st.text(max_size=70), max_size=1), _ODD
    ),
    "schema_version": st.one_of(st.sampled_from([1, 2, 1.0, True, None, "1"]), _ODD),
}


@st.composite
def messages(draw: st.DrawFn, outcome: bool) -> bytes | None:
    doc: dict[str, object] = (
        {"event_id": "e1", "model_id": "m-1", "timestamp": 5, "label": 1}
        if outcome
        else good_prediction(timestamp=5)
    )
    for name in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=3, unique=True)):
        if draw(st.booleans()):
            doc[name] = draw(_FIELD_VALUES[name])
        else:
            doc.pop(name, None)
    kind = draw(st.integers(min_value=0, max_value=19))
    if kind == 0:
        return None
    if kind == 1:
        return draw(st.binary(max_size=20))
    # The standard library writes integers of any size (orjson refuses those beyond 64 bits).
    text = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    if kind == 2:
        return b"[" + text + b"]"
    if kind == 3:
        return text[:-1]
    return text


def _same_as_per_message(values: list[bytes | None], outcome: bool) -> None:
    from driftline.service.decode import BatchDecoder

    careful = decode_outcome if outcome else decode_prediction
    decoder = BatchDecoder(LIMITS)
    docs, errors = (decoder.decode_outcomes if outcome else decoder.decode_predictions)(values)
    by_position = dict(errors)
    assert len(docs) == len(values) and len(by_position) == len(errors)
    for i, value in enumerate(values):
        try:
            event = careful(value, SOURCE, LIMITS)
        except DecodeError as exc:
            assert docs[i] is None
            assert (by_position[i].reason, by_position[i].detail) == (exc.reason, exc.detail)
            continue
        doc = docs[i]
        assert i not in by_position and doc is not None
        assert (doc.event_id, doc.model_id, doc.model_version, doc.timestamp) == (
            event.event_id,
            event.model_id,
            event.model_version,
            event.timestamp_ms,
        )
        assert doc.score == event.score and type(doc.score) is type(event.score)
        if outcome:
            assert (doc.label, doc.prediction) == (event.label, event.prediction)  # type: ignore[union-attr]
        else:
            assert doc.features == event.features  # type: ignore[union-attr]
            assert [type(v) for v in doc.features.values()] == [
                type(v) for v in event.features.values()  # type: ignore[union-attr]
            ]
            assert (doc.prediction, doc.segment) == (event.prediction, event.segment)  # type: ignore[union-attr]


@settings(max_examples=400, deadline=None)
@given(st.lists(messages(outcome=False), max_size=6))
def test_batch_decoder_agrees_with_decode_prediction(values: list[bytes | None]) -> None:
    """Whatever a batch holds, each prediction is accepted with the same fields, or refused with
    the same reason and detail, as ``decode_prediction`` alone gives."""
    _same_as_per_message(values, outcome=False)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages(outcome=True), max_size=6))
def test_batch_decoder_agrees_with_decode_outcome(values: list[bytes | None]) -> None:
    _same_as_per_message(values, outcome=True)


def test_a_model_id_with_a_bad_character_is_refused_in_every_batch() -> None:
    """The characters of a model_id are checked once per distinct id and decoder: an id found
    bad stays bad in later batches, next to ids already found good, with decode_outcome's
    reason and detail."""
    from driftline.service.decode import BatchDecoder

    def outcome(model_id: str) -> bytes:
        return orjson.dumps({"event_id": "e", "model_id": model_id, "timestamp": 5, "label": 0})

    decoder = BatchDecoder(LIMITS)
    with pytest.raises(DecodeError) as expected:
        decode_outcome(outcome("a b"), SOURCE, LIMITS)
    for batch in (
        [outcome("m-1"), outcome("a b")],
        [outcome("a b"), outcome("m-1"), outcome("m\n")],
    ):
        docs, errors = decoder.decode_outcomes(batch)
        bad = [i for i, value in enumerate(batch) if value != outcome("m-1")]
        assert [i for i, _ in errors] == bad
        assert all(docs[i] is None for i in bad) and all(
            doc is not None and doc.model_id == "m-1" for i, doc in enumerate(docs) if i not in bad
        )
        assert {(e.reason, e.detail) for _, e in errors} == {
            (expected.value.reason, expected.value.detail)
        }
