"""Integer-only deployment of trained AQD detectors (the floor above ``models``).

``mmaqd.deploy.network`` (the integer network) needs torch and :mod:`mmaqd.ops` only and is what this package
imports; the converter (:mod:`mmaqd.deploy.converter`), the mmdet models that run an artefact
(:mod:`mmaqd.deploy.detectors`) and the verification (:mod:`mmaqd.deploy.verify`) need mmdet and are imported
by name.
"""
from .network import IntegerNetwork  # noqa: F401

__all__ = ['IntegerNetwork']
