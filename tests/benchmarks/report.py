"""Turn pytest-benchmark's JSON into the markdown tables that ``scripts/bench`` prints.

Usage: ``python tests/benchmarks/report.py build/bench.json > build/bench.md``, or with one
JSON file per Python (``build/bench-3.11.json build/bench-3.12.json ...``): a table of the
ratios and targets with a column per Python version (``machine_info.python_version``), then
each version's full table.

One row per benchmark of ours: its median per operation, the group's peer (or baseline)
median, the ratio ours/reference, what else it measured, and each target with whether it is
met. A benchmark records in ``extra_info`` (``Bench.record`` in ``conftest.py``): ``role``
("ours", "peer" or "baseline"), ``ops`` per round, and optionally ``rate_unit`` (the row
then shows operations per second), ``metrics``, ``note`` and ``targets``. Target keys:
``max_us`` (our median per operation), ``max_ratio`` (ours/reference), ``min_rate``
(operations per second), ``min_rate_ratio`` (our rate over the reference's),
``max_<metric>`` and ``min_<metric>`` for a recorded metric.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

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


class Target(NamedTuple):
    """One target checked against what was measured; ``met`` is ``None`` if not measured."""

    name: str
    sign: str
    limit: float
    actual: float | None
    met: bool | None

    @property
    def text(self) -> str:
        return f"{self.name} {self.sign} {format_number(self.limit)}"

    @property
    def off(self) -> float:
        """How far the measure is from the limit, as a factor (1.0 or more when missed)."""
        assert self.actual is not None
        return self.actual / self.limit if self.sign == "<=" else self.limit / self.actual


def evaluate_target(key: str, limit: float, numbers: Mapping[str, float]) -> Target:
    """The target ``key`` (``max_us``, ``min_rate``, ...) with ``limit``, checked."""
    bound, _, name = key.partition("_")
    actual = numbers.get(name)
    if actual is None:
        return Target(name, "<=" if bound == "max" else ">=", limit, None, None)
    met = actual <= limit if bound == "max" else actual >= limit
    return Target(name, "<=" if bound == "max" else ">=", limit, actual, met)


def format_target(target: Target) -> str:
    """``"ratio <= 2: met (1.4)"``, ``"... MISSED (2.6, 1.30x off)"`` or ``"...: NOT MEASURED"``."""
    if target.actual is None:
        return f"{target.text}: NOT MEASURED"
    if target.met:
        return f"{target.text}: met ({format_number(target.actual)})"
    return f"{target.text}: MISSED ({format_number(target.actual)}, {target.off:.2f}x off)"


def check_target(key: str, limit: float, numbers: Mapping[str, float]) -> str:
    """``"ratio <= 2: met (1.4)"`` or ``"ratio <= 2: MISSED (2.6, 1.30x off)"``."""
    return format_target(evaluate_target(key, limit, numbers))


def describe(bench: Bench) -> str:
    """The non-time numbers of a benchmark: its rate and metrics, then its note."""
    info = bench["extra_info"]
    parts = [f"{name}={format_number(value)}" for name, value in info.get("metrics", {}).items()]
    if "rate_unit" in info:
        parts.insert(0, f"{format_number(1.0 / per_op(bench))} {info['rate_unit']}")
    if "note" in info:
        parts.append(f"({info['note']})")
    return ", ".join(parts)


@dataclass(frozen=True)
class Row:
    """One benchmark of ours beside its group's reference, with its targets checked."""

    label: str
    ours: float
    reference: float | None
    reference_name: str
    measured: str
    targets: tuple[Target, ...]

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.ours / self.reference

    def cells(self) -> tuple[str, ...]:
        """The row of the one-version table, in the order of ``HEADER``."""
        return (
            self.label,
            format_seconds(self.ours),
            ""
            if self.reference is None
            else f"{format_seconds(self.reference)} ({self.reference_name})",
            "" if self.ratio is None else f"{self.ratio:.2f}x",
            self.measured,
            "; ".join(map(format_target, self.targets)) or "(report only)",
        )

    def summary(self) -> str:
        """The cell of one Python in the table across versions: the ratio and times, the
        other numbers a target names, then ``met`` or what was missed and by how much."""
        parts = [format_seconds(self.ours)]
        if self.reference is not None:
            parts = [f"{self.ratio:.2f}x ({parts[0]} vs {format_seconds(self.reference)})"]
        parts += [
            f"{t.name}={format_number(t.actual)}"
            for t in self.targets
            if t.actual is not None and t.name not in ("us", "ratio")
        ]
        if not self.targets:
            return ", ".join(parts)
        missed = [
            f"{t.text} (not measured)" if t.actual is None else f"{t.text} ({t.off:.2f}x off)"
            for t in self.targets
            if not t.met
        ]
        return ", ".join(parts) + (": MISSED " + ", ".join(missed) if missed else ": met")


def row(group: str, ours: Bench, reference: Bench | None) -> Row:
    ratio = per_op(ours) / per_op(reference) if reference is not None else None
    numbers = measured(ours, ratio)
    variant = ours["name"].partition("[")[2].rstrip("]")
    return Row(
        label=f"{group} [{variant}]" if variant else group,
        ours=per_op(ours),
        reference=None if reference is None else per_op(reference),
        reference_name="" if reference is None else reference["name"],
        measured="; ".join(
            filter(None, [describe(ours)] + ([describe(reference)] if reference else []))
        ),
        targets=tuple(
            evaluate_target(k, v, numbers) for k, v in ours["extra_info"].get("targets", {}).items()
        ),
    )


def rows(benches: Iterable[Bench]) -> list[Row]:
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


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def python_version(data: Mapping[str, Any]) -> str:
    """The Python a run was measured on, as pytest-benchmark recorded it."""
    return str(data.get("machine_info", {}).get("python_version", "?"))


def render(data: Mapping[str, Any]) -> str:
    """The markdown table, then the machine it was measured on."""
    lines = markdown_table(HEADER, (r.cells() for r in rows(data["benchmarks"])))
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    where = f"{cpu.get('brand_raw', '?')} ({cpu.get('count', '?')} CPUs)"
    lines += ["", f"Python {python_version(data)}, {where}, {data.get('datetime', '')}."]
    return "\n".join(lines) + "\n"


def labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """``Python 3.12.1`` per run; a version measured twice gets ``(2)``, ``(3)``..."""
    seen: dict[str, int] = {}
    named = []
    for data in runs:
        label = f"Python {python_version(data)}"
        seen[label] = seen.get(label, 0) + 1
        named.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return named


def render_versions(runs: Sequence[Mapping[str, Any]]) -> str:
    """One run: its table. Several (one per Python): the ratios and targets with a column
    per version, then each version's full table."""
    if len(runs) == 1:
        return render(runs[0])
    names = labels(runs)
    by_run = [{r.label: r for r in rows(data["benchmarks"])} for data in runs]
    order = list(dict.fromkeys(label for table in by_run for label in table))
    body = []
    for label in order:
        found = [table.get(label) for table in by_run]
        targets = next(r.targets for r in found if r is not None)
        body.append(
            (
                label,
                "; ".join(t.text for t in targets) or "(report only)",
                *("not run" if r is None else r.summary() for r in found),
            )
        )
    lines = [
        "Ratio ours/reference and medians per operation, one column per Python; each",
        "column is its own run: compare the ratios (both sides ran in the same process),",
        "not times across columns.",
        "",
        *markdown_table(("group", "target", *names), body),
    ]
    for name, data in zip(names, runs, strict=True):
        lines += ["", f"## {name}", "", render(data).rstrip("\n")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    runs = []
    for path in argv[1:]:
        with open(path, encoding="utf-8") as handle:
            runs.append(json.load(handle))
    if not runs:
        sys.stderr.write("usage: report.py BENCH.json [BENCH-3.12.json ...]\n")
        return 2
    sys.stdout.write(render_versions(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
