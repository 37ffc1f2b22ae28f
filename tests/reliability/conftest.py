"""Counters for the reliability suite, reported at the end of the run.

Each fuzzing test counts the malformed inputs it tried and each kill test the kills it survived;
the totals are printed in pytest's terminal summary, so the figures quoted in
``docs/reliability.md`` come from the suite itself.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

TALLY: collections.Counter = collections.Counter()


def pytest_collection_modifyitems(items):
    """Every test of this folder kills processes or fills disks and watches the recovery: ``serial``,
    so ``make test`` runs them alone (the other tests share the CPU between two workers)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def tally() -> collections.Counter:
    return TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not TALLY:
        return
    terminalreporter.section("reliability")
    for key in sorted(TALLY):
        terminalreporter.write_line(f"{key}: {TALLY[key]}")
