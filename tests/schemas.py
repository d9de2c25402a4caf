"""The JSON Schemas of what driftline writes, for tests to hold its output to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / name).read_text()), format_checker=jsonschema.FormatChecker()
    )


ALERT_SCHEMA = _validator("alert.v1.json")
INCIDENT_SCHEMA = _validator("incident.v1.json")
KPI_SCHEMA = _validator("kpi.v1.json")


def validate_output(event: dict[str, Any]) -> None:
    """Validate one object of the alerts topic: an incident event or an alert."""
    if event.get("kind") == "incident":
        INCIDENT_SCHEMA.validate(event)
    else:
        ALERT_SCHEMA.validate(event)
