"""The table ``scripts/bench`` prints: ``tests/benchmarks/report.py`` on pytest-benchmark's
JSON, for one run and for one run per Python version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.report import main, render, render_versions

GROUP = "warm resolve inside a scope"


def bench(name: str, role: str, median: float, *, group: str = GROUP, **extra: Any) -> Any:
    """One benchmark as pytest-benchmark writes it, with what ``Bench.record`` adds."""
    return {
        "name": name,
        "group": group,
        "stats": {"median": median},
        "extra_info": {"role": role, "ops": extra.pop("ops", 1), **extra},
    }


def run(python: str, *benches: Any) -> Any:
    """One pytest-benchmark JSON document measured on ``python``."""
    return {
        "machine_info": {"python_version": python, "cpu": {"brand_raw": "CPU", "count": 2}},
        "datetime": "2026-12-01T12:00:00",
        "benchmarks": list(benches),
    }


def warm_resolve(python: str, ours_us: float, peer_us: float) -> Any:
    """The warm-resolve pair with the issue's targets, ours at ``ours_us`` per resolve."""
    resolves = 10_000
    return run(
        python,
        bench(
            "test_warm_resolve",
            "ours",
            ours_us * 1e-6 * resolves,
            ops=resolves,
            targets={"max_us": 0.3, "max_ratio": 1.5},
        ),
        bench(
            "test_context_local_singleton_warm_call",
            "peer",
            peer_us * 1e-6 * resolves,
            ops=resolves,
        ),
    )


def table_row(text: str, label: str) -> list[str]:
    """The cells of the markdown row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


class TestOneRun:
    def test_a_row_shows_the_medians_the_ratio_and_each_target_checked(self) -> None:
        """Ours and the peer per operation, ours/peer, and each target met or missed."""
        text = render(warm_resolve("3.11.7", 0.28, 0.2))

        assert [
            GROUP,
            "280 ns",
            "200 ns (test_context_local_singleton_warm_call)",
            "1.40x",
            "",
            "us <= 0.3: met (0.28); ratio <= 1.5: met (1.4)",
        ] == table_row(text, GROUP)

    def test_a_missed_target_says_by_how_much(self) -> None:
        """A target that is not met reads MISSED with the measure and the factor off."""
        text = render(warm_resolve("3.11.7", 0.4, 0.2))

        assert (
            "us <= 0.3: MISSED (0.4, 1.33x off); ratio <= 1.5: MISSED (2, 1.33x off)"
            == (table_row(text, GROUP)[5])
        )

    def test_a_rate_target_compares_our_rate_with_the_reference(self) -> None:
        """min_rate_ratio is our operations per second over the reference's."""
        fanout = "event fan-out"
        text = render(
            run(
                "3.11.7",
                bench("test_fanout", "ours", 4.0, group=fanout, targets={"min_rate_ratio": 0.8}),
                bench("test_bare", "baseline", 1.0, group=fanout),
            )
        )

        assert "rate_ratio >= 0.8: MISSED (0.25, 3.20x off)" == table_row(text, fanout)[5]

    def test_one_run_is_its_own_table_with_its_python_under_it(self) -> None:
        """With one file there is no table across versions: the table and its machine."""
        data = warm_resolve("3.11.7", 0.28, 0.2)

        text = render_versions([data])

        assert render(data) == text
        assert "Python 3.11.7, CPU (2 CPUs), 2026-12-01T12:00:00." == text.splitlines()[-1]


class TestOneRunPerPython:
    def test_a_column_per_python_with_the_ratio_and_the_targets_of_each(self) -> None:
        """Each version's cell has its ratio and times, and met or what it missed."""
        text = render_versions(
            [warm_resolve("3.11.7", 0.4, 0.2), warm_resolve("3.12.1", 0.25, 0.2)]
        )

        assert ["group", "target", "Python 3.11.7", "Python 3.12.1"] == table_row(text, "group")
        assert [
            GROUP,
            "us <= 0.3; ratio <= 1.5",
            "2.00x (400 ns vs 200 ns): MISSED us <= 0.3 (1.33x off), ratio <= 1.5 (1.33x off)",
            "1.25x (250 ns vs 200 ns): met",
        ] == table_row(text, GROUP)

    def test_a_metric_a_target_names_is_shown_beside_the_time(self) -> None:
        """A target on a recorded metric shows that metric in each version's cell."""
        memory = "memory per idle engine"

        def engines(python: str, size: int) -> Any:
            return run(
                python,
                bench(
                    "test_memory",
                    "ours",
                    1e-3,
                    group=memory,
                    metrics={"bytes_per_engine": size},
                    targets={"max_bytes_per_engine": 1024},
                ),
            )

        text = render_versions([engines("3.11.7", 1456), engines("3.13.0", 1000)])

        assert [
            memory,
            "bytes_per_engine <= 1,024",
            "1 ms, bytes_per_engine=1,456: MISSED bytes_per_engine <= 1,024 (1.42x off)",
            "1 ms, bytes_per_engine=1,000: met",
        ] == table_row(text, memory)

    def test_a_benchmark_missing_from_a_version_reads_not_run(self) -> None:
        """Rows are the union of the runs; a version that did not run one says so."""
        factory = bench("test_create", "ours", 8e-6, group="create_for_user + cleanup_engine")
        first = warm_resolve("3.11.7", 0.28, 0.2)
        first["benchmarks"].append(factory)

        text = render_versions([first, warm_resolve("3.13.0", 0.28, 0.2)])

        assert [
            "create_for_user + cleanup_engine",
            "(report only)",
            "8 us",
            "not run",
        ] == table_row(text, "create_for_user + cleanup_engine")

    def test_each_version_full_table_follows_under_its_heading(self) -> None:
        """After the table across versions comes each run's own table, in the given order."""
        runs = [warm_resolve("3.12.1", 0.25, 0.2), warm_resolve("3.11.7", 0.28, 0.2)]

        text = render_versions(runs)

        first = text.index("## Python 3.12.1\n\n" + render(runs[0]))
        second = text.index("## Python 3.11.7\n\n" + render(runs[1]))
        assert first < second

    def test_the_same_version_measured_twice_gets_a_number(self) -> None:
        """Two runs on one version stay two columns: the second is labelled (2)."""
        text = render_versions([warm_resolve("3.12.1", 0.25, 0.2)] * 2)

        expected = ["group", "target", "Python 3.12.1", "Python 3.12.1 (2)"]
        assert expected == table_row(text, "group")


class TestCommandLine:
    def test_several_files_print_the_table_across_versions(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``report.py a.json b.json`` prints what render_versions makes of them."""
        runs = [warm_resolve("3.11.7", 0.28, 0.2), warm_resolve("3.13.0", 0.3, 0.2)]
        paths = []
        for n, data in enumerate(runs):
            path = tmp_path / f"bench-{n}.json"
            path.write_text(json.dumps(data), encoding="utf-8")
            paths.append(str(path))

        status = main(["report.py", *paths])

        assert 0 == status
        assert render_versions(runs) == capsys.readouterr().out

    def test_no_file_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a JSON file the command says how to call it and exits with 2."""
        status = main(["report.py"])

        assert 2 == status
        assert "usage: report.py BENCH.json [BENCH-3.12.json ...]\n" == capsys.readouterr().err
