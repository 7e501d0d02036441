"""`bench compare`: from the command's arguments to its report.
"""
from __future__ import annotations

from pathlib import Path

from bench.compare.cells import compare_sides
from bench.compare.sides import (Selection, Side, of_dataset, only_dataset, parse_selection, read_leaderboard,
                                 read_results_dir, select)
from bench.compare.text import report
from bench.errors import BenchError
from bench.results.records import repository_reference


def compare_command(leaderboards: list[Path], results_dir: Path | None, a: str | None, b: str | None,
                    dataset: str | None) -> list[str]:
    """The report of `bench compare`, from its arguments (see `bench.cli`), or a BenchError naming what is wrong.

    Two leaderboards, no selection: the same configurations on both. With `--a` and `--b`: that
    configuration of A (the first leaderboard, the only one, or the results directory) against
    that of B (the second leaderboard, or the same source). In a results dir, a configuration it does
    not hold (a baseline a user never ran) is taken from the repository's reference results, and
    the report says so; their runs on other data are kept apart as always.
    """
    if (a is None) != (b is None):
        raise BenchError(f"{'--a' if a is not None else '--b'} needs {'--b' if a is not None else '--a'}: "
                         "give both configurations to compare (or neither, to compare two leaderboards)")
    if len(leaderboards) > 2:
        raise BenchError(f"{len(leaderboards)} leaderboards given; compare takes two, or one with --a and --b")
    if leaderboards and results_dir is not None:
        raise BenchError("give leaderboard CSVs or --results-dir, not both")
    if a is None and len(leaderboards) < 2:
        raise BenchError("give two leaderboards (bench compare A.csv B.csv), or --a and --b to compare two "
                         "configurations of one results directory or leaderboard")
    selections = (parse_selection(a, "--a"), parse_selection(b, "--b")) if a is not None else None
    if leaderboards:
        side_a = read_leaderboard(leaderboards[0])
        side_b = read_leaderboard(leaderboards[1]) if len(leaderboards) == 2 else side_a
    else:
        side_a = side_b = read_results_dir(results_dir if results_dir is not None else Path("results/local"))
    if dataset is not None:
        present = set(side_a.long["dataset"]) | set(side_b.long["dataset"])
        if not any(of_dataset(d, dataset) for d in present):
            raise BenchError(f"--dataset {dataset!r}: no run on it; valid choices: {', '.join(sorted(present))}")
        side_a, side_b = only_dataset(side_a, dataset), only_dataset(side_b, dataset)
    if selections is not None:
        borrow = not leaderboards and repository_reference() is not None
        side_a, side_b = (_select_or_borrow(side, selection, dataset, borrow)
                          for side, selection in zip((side_a, side_b), selections))
    comparison = compare_sides(side_a.long, side_b.long, same_configuration=selections is None)
    name_a = side_a.name + (f", {selections[0].text}" if selections else "")
    name_b = side_b.name + (f", {selections[1].text}" if selections else "")
    lines = report(comparison, name_a, name_b) + code_notes(side_a, side_b)
    if not side_a.long.empty and side_a.long.equals(side_b.long):
        lines.insert(0, "note: A and B are the same runs (a configuration or leaderboard compared with itself): "
                        "every difference is 0 by construction")
    return lines


def _select_or_borrow(side: Side, selection: Selection, dataset: str | None, borrow: bool) -> Side:
    """`select(side, selection)`, or that configuration of the reference results when `side` (a results
    dir) has none and `borrow`; the error about `side` when neither has it."""
    try:
        return select(side, selection)
    except BenchError as own_error:
        reference = repository_reference()
        if not borrow or Path(side.name).resolve() == reference.resolve():
            raise
        other = read_results_dir(reference)
        other = only_dataset(other, dataset) if dataset is not None else other
        try:
            chosen = select(other, selection)
        except BenchError:
            raise own_error from None
        return Side(f"{chosen.name} (reference results: {side.name} has no {selection.text})", chosen.long,
                    chosen.code)


def code_notes(side_a: Side, side_b: Side) -> list[str]:
    """One line per defense whose runs on the two sides were made by different code (their records'
    `code_digests`): a difference between them may come from the code as well as from the seeds."""
    def digests(side: Side) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for run_id, defense in zip(side.long["run_id"], side.long["defense"]):
            if run_id in side.code:
                out.setdefault(defense, set()).add(side.code[run_id][:12])
        return out

    a, b = digests(side_a), digests(side_b)
    return [f"note: defense {d}: A's runs were made by its code {', '.join(sorted(a[d]))}, B's by "
            f"{', '.join(sorted(b[d]))}: a difference may come from the code, not only the seeds"
            for d in sorted(set(a) & set(b)) if a[d] != b[d]]
