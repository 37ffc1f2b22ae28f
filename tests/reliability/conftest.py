"""Counters for the reliability suite, reported at the end of the run.

Each fuzzing test counts the malformed inputs it tried and each kill test the kills it survived;
the totals are printed in pytest's terminal summary, so the figures quoted in
``docs/reliability.md`` come from the suite itself.
"""

from __future__ import annotations

import collections

import pytest

TALLY: collections.Counter = collections.Counter()


@pytest.fixture
def tally() -> collections.Counter:
    return TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not TALLY:
        return
    terminalreporter.section("reliability")
    for key in sorted(TALLY):
        terminalreporter.write_line(f"{key}: {TALLY[key]}")
