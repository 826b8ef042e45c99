"""trialdiff: track what changed in ClinicalTrials.gov study records."""

__version__ = "0.1.0"
