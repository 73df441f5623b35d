"""Turn pytest-benchmark's JSON into the markdown table that ``scripts/bench`` prints.

Usage: ``python tests/benchmarks/report.py build/bench.json > build/bench.md``

One row per benchmark of ours: its median per operation, the group's peer (or baseline)
median, the ratio ours/reference, what else it measured, and each target with whether it is
met. A benchmark records in ``extra_info`` (``Bench.record`` in ``conftest.py``): ``role``
("ours", "peer" or "baseline"), ``ops`` per round, and optionally ``rate_unit`` (the row
then shows operations per second), ``metrics``, ``note`` and ``targets``. Target keys:
``max_us`` (our median per operation), ``max_ratio`` (ours/reference), ``min_rate``
(operations per second), ``min_rate_ratio`` (our rate over the reference's), ``max_<metric>`` and ``min_<metric>`` for a recorded metric.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

Bench = Mapping[str, Any]

HEADER = ("group", "ours: median/op", "reference: median/op", "ratio", "measured", "target")


def format_seconds(seconds: float) -> str:
    """A duration in the unit that shows it with three significant figures."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_number(value: float) -> str:
    """``1,234``, ``1.23`` or ``123,457``: integers and large values get separators."""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{round(value):,}"
    return f"{value:.3g}"


def per_op(bench: Bench) -> float:
    """Median seconds per operation."""
    return float(bench["stats"]["median"]) / int(bench["extra_info"].get("ops", 1))


def measured(bench: Bench, ratio: float | None) -> dict[str, float]:
    """Every number a target can name: ``us``, ``rate``, ``ratio`` and the metrics."""
    numbers = {"us": per_op(bench) * 1e6, "rate": 1.0 / per_op(bench)}
    if ratio is not None:
        numbers["ratio"] = ratio
        numbers["rate_ratio"] = 1.0 / ratio  # reference time / ours: our rate over theirs
    numbers.update(bench["extra_info"].get("metrics", {}))
    return numbers


def check_target(key: str, limit: float, numbers: Mapping[str, float]) -> str:
    """``"ratio <= 2: met (1.4)"`` or ``"... MISSED (x1.3 over)"`` for one target."""
    bound, _, name = key.partition("_")
    sign = "<=" if bound == "max" else ">="
    text = f"{name} {sign} {format_number(limit)}"
    actual = numbers.get(name)
    if actual is None:
        return f"{text}: NOT MEASURED"
    met = actual <= limit if bound == "max" else actual >= limit
    if met:
        return f"{text}: met ({format_number(actual)})"
    off = actual / limit if bound == "max" else limit / actual
    return f"{text}: MISSED ({format_number(actual)}, {off:.2f}x off)"


def describe(bench: Bench) -> str:
    """The non-time numbers of a benchmark: its rate and metrics, then its note."""
    info = bench["extra_info"]
    parts = [f"{name}={format_number(value)}" for name, value in info.get("metrics", {}).items()]
    if "rate_unit" in info:
        parts.insert(0, f"{format_number(1.0 / per_op(bench))} {info['rate_unit']}")
    if "note" in info:
        parts.append(f"({info['note']})")
    return ", ".join(parts)


def row(group: str, ours: Bench, reference: Bench | None) -> tuple[str, ...]:
    ratio = per_op(ours) / per_op(reference) if reference is not None else None
    numbers = measured(ours, ratio)
    targets = [
        check_target(k, v, numbers) for k, v in ours["extra_info"].get("targets", {}).items()
    ]
    variant = ours["name"].partition("[")[2].rstrip("]")
    return (
        f"{group} [{variant}]" if variant else group,
        format_seconds(per_op(ours)),
        "" if reference is None else f"{format_seconds(per_op(reference))} ({reference['name']})",
        "" if ratio is None else f"{ratio:.2f}x",
        "; ".join(filter(None, [describe(ours)] + ([describe(reference)] if reference else []))),
        "; ".join(targets) or "(report only)",
    )


def rows(benches: Iterable[Bench]) -> list[tuple[str, ...]]:
    """One row per benchmark of ours, compared with the first peer or baseline of its group."""
    groups: dict[str, list[Bench]] = {}
    for bench in benches:
        groups.setdefault(bench["group"] or bench["name"], []).append(bench)
    table = []
    for group, members in groups.items():
        references = [b for b in members if b["extra_info"].get("role") in ("peer", "baseline")]
        reference = references[0] if references else None
        table += [row(group, b, reference) for b in members if b["extra_info"]["role"] == "ours"]
    return table


def render(data: Mapping[str, Any]) -> str:
    """The markdown table, then the machine it was measured on."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(data["benchmarks"])]
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    python = machine.get("python_version", "?")
    where = f"{cpu.get('brand_raw', '?')} ({cpu.get('count', '?')} CPUs)"
    lines += ["", f"Python {python}, {where}, {data.get('datetime', '')}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as handle:
        sys.stdout.write(render(json.load(handle)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
