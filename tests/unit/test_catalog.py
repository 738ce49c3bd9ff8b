"""The hardware catalog: built-in figures with sources, user additions, bad files refused."""

from __future__ import annotations

import fnmatch
import textwrap
import tomllib
from pathlib import Path

import pytest

from modelport.core.errors import InvalidRequest
from modelport.planning.catalog import BUILTIN_FILE, load_catalog, parse_catalog

REQUIRED = ["cpu", "t4", "l4", "a10g", "l40s", "a100-40gb", "a100-80gb", "h100", "h200"]
FIGURES = ["memory_gb", "bandwidth_gbs", "bf16_tflops", "hourly_usd"]
ROOT = Path(__file__).resolve().parents[2]


def test_builtin_catalog_has_every_required_type_with_a_source_for_every_figure() -> None:
    catalog = load_catalog()
    assert set(REQUIRED) <= set(catalog.names())
    for hw in catalog:
        for figure in FIGURES:
            assert getattr(hw, figure) > 0, (hw.name, figure)
            assert figure in hw.sources, (hw.name, figure)
        # Prices come from a named cloud's price page; GPU figures from NVIDIA.
        assert "aws.amazon.com/ec2/pricing" in hw.sources["hourly_usd"], hw.name
        if hw.kind == "gpu":
            assert "nvidia.com" in hw.sources["memory_gb"] or "amazon" in hw.sources["memory_gb"]
            assert "nvidia.com" in hw.sources["bf16_tflops"], hw.name
        else:
            assert hw.vcpus >= 1


def test_builtin_figures_match_the_datasheets() -> None:
    """Spot checks against the vendor pages, so a typo in the data file cannot pass."""
    catalog = load_catalog()
    h100, a100, l4, cpu = (catalog.get(n) for n in ("h100", "a100-80gb", "l4", "cpu"))
    assert (h100.memory_gb, h100.bandwidth_gbs, h100.bf16_tflops) == (80, 3350, 989)
    assert (a100.memory_gb, a100.bandwidth_gbs, a100.bf16_tflops) == (80, 2039, 312)
    assert (l4.memory_gb, l4.bandwidth_gbs, l4.bf16_tflops) == (24, 300, 121)
    assert cpu.kind == "cpu" and cpu.vcpus == 2 and cpu.max_count == 1
    # More memory and bandwidth never comes cheaper within a generation's line-up.
    assert catalog.get("a100-40gb").hourly_usd < a100.hourly_usd < h100.hourly_usd


def test_unknown_type_is_a_400_naming_the_field_and_the_known_types() -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_catalog().get("tpu-v5")
    assert caught.value.details["param"] == "resources.hardware"
    assert "tpu-v5" in caught.value.message and "h100" in caught.value.message


def test_hardware_yaml_ships_in_the_wheel() -> None:
    """The catalog is package data: setuptools must be told, or an installed modelport has none."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["modelport"]
    relative = BUILTIN_FILE.relative_to(ROOT / "src" / "modelport").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), patterns


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hardware.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_user_file_adds_and_overrides_types(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        hardware:
          h100:
            kind: gpu
            memory_gb: 80
            bandwidth_gbs: 3350
            bf16_tflops: 989
            hourly_usd: 2.49   # our negotiated rate
          mi300x:
            kind: gpu
            memory_gb: 192
            bandwidth_gbs: 5300
            bf16_tflops: 1307
            hourly_usd: 4.0
            max_count: 8
            sources: {memory_gb: "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html"}
        """,
    )
    catalog = load_catalog(path)
    assert catalog.get("h100").hourly_usd == 2.49
    assert catalog.get("mi300x").memory_gb == 192
    builtin = load_catalog().names()
    assert catalog.names() == [*builtin, "mi300x"]  # built-in order kept, additions after


@pytest.mark.parametrize(
    ("body", "field", "line"),
    [
        ("hardware:\n  x:\n    kind: tpu\n", "hardware.x.kind", 3),
        (
            "hardware:\n  x:\n    kind: gpu\n    memory_gb: lots\n",
            "hardware.x.memory_gb",
            4,
        ),
        (
            "hardware:\n  x:\n    kind: gpu\n    memory_gb: 16\n    bandwidth_gbs: 300\n"
            "    bf16_tflops: 65\n    hourly_usd: -1\n",
            "hardware.x.hourly_usd",
            7,
        ),
        (
            "hardware:\n  x:\n    kind: gpu\n    memory_gb: .nan\n",
            "hardware.x.memory_gb",
            4,
        ),
        ("hardware:\n  x:\n    kind: gpu\n    colour: green\n", "hardware.x.colour", 4),
        ("hardware:\n  x: 12\n", "hardware.x", 2),
        ("hardware:\n  'bad name!':\n    kind: gpu\n", "hardware.bad name!", 2),
        ("gpus:\n  x: {}\n", "gpus", 1),
        ("hardware: []\n", "hardware", 1),
        (
            "hardware:\n  x:\n    kind: cpu\n    memory_gb: 8\n    bandwidth_gbs: 10\n"
            "    bf16_tflops: 0.1\n    hourly_usd: 0.1\n",
            "hardware.x.vcpus",
            2,
        ),
        (
            "hardware:\n  x:\n    kind: gpu\n    memory_gb: 8\n    bandwidth_gbs: 10\n"
            "    bf16_tflops: 0.1\n    hourly_usd: 0.1\n    max_count: 0\n",
            "hardware.x.max_count",
            8,
        ),
        (
            "hardware:\n  x:\n    kind: gpu\n    memory_gb: 8\n    bandwidth_gbs: 10\n"
            "    bf16_tflops: 0.1\n    hourly_usd: 0.1\n    sources: [a]\n",
            "hardware.x.sources",
            8,
        ),
    ],
)
def test_bad_user_file_is_a_400_naming_field_and_line(
    tmp_path: Path, body: str, field: str, line: int
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_catalog(_write(tmp_path, body))
    assert caught.value.status == 400
    assert caught.value.details["param"] == field
    assert caught.value.details["line"] == line
    assert f"{field} (line {line})" in caught.value.message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "empty"),
        ("hardware: {x: &a {kind: gpu}, y: *a}\n", "anchors"),
        ("hardware:\n  x: {kind: gpu\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("hardware:\n  x: {}\n  x: {}\n", "duplicate"),
    ],
)
def test_unsafe_or_malformed_yaml_is_a_400(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_catalog(_write(tmp_path, body))
    assert caught.value.status == 400
    assert says in caught.value.message


def test_missing_user_file_is_a_400_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_catalog(tmp_path / "nope.yaml")
    assert "nope.yaml" in caught.value.message
    assert caught.value.details["param"] == "hardware_file"


def test_parse_catalog_reads_the_builtin_file_alone() -> None:
    types = parse_catalog(BUILTIN_FILE.read_text(), "hardware.yaml")
    assert list(types) == load_catalog().names()
