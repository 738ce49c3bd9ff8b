"""Modelport: deploy trained models as governed, metered, versioned endpoints."""

__version__ = "0.1.0"
