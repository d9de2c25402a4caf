"""driftline: streaming drift detection for machine-learning models in production, on Kafka.

The distribution's one top-level import name. ``driftline.detectors`` (the pure detection core,
no Kafka) and ``driftline.service`` (the Kafka service and the ``driftline`` command) are the
repository's ``detectors/`` and ``service/`` folders, linked here so that they install under
this name instead of as two generic top-level packages.
"""
