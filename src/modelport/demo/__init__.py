"""Demo models built offline from data that ships inside PyPI packages."""

from modelport.demo.build import DEMO_ENDPOINT, DemoAssets, build_demo, build_digits
from modelport.demo.catalog import DEMOS, DemoArtifact, DemoModel

__all__ = [
    "DEMOS",
    "DEMO_ENDPOINT",
    "DemoArtifact",
    "DemoAssets",
    "DemoModel",
    "build_demo",
    "build_digits",
]
