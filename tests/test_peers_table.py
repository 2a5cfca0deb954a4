"""docs/performance.md's table against the peers is what scripts/peers_table.py writes from the committed records,
so a number on the page cannot drift from the race that made it, and a record or a row without its twin is caught."""

import json

from conftest import REPO, load_script

RECORDS = sorted((REPO / "docs" / "performance" / "peers").glob("*.json"))
MARKER = "<!-- peers table: python scripts/peers_table.py docs/performance/peers/*.json -->"


def test_page_table_is_the_records_table(capsys):
    load_script("peers_table").main([str(path) for path in RECORDS])
    written = capsys.readouterr().out.splitlines()
    after_marker = (REPO / "docs" / "performance.md").read_text().split(MARKER, 1)[1].lstrip("\n")
    assert after_marker.split("\n\n", 1)[0].splitlines() == written  # the whole table, up to its blank line


def test_recorded_budgets_end_within_two_percent_or_ten_seconds():
    """What a budgeted run promises, read from every race whose record holds dgm's run clock."""
    clocked = [json.loads(path.read_text()) for path in RECORDS]
    clocked = [record for record in clocked if "run_clock_seconds" in record["dgm"]]
    assert clocked, "no record holds dgm's run clock"
    for record in clocked:
        budget = record["minutes"] * 60
        assert abs(record["dgm"]["run_clock_seconds"] - budget) <= max(0.02 * budget, 10), record["command"]
