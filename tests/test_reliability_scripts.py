"""The reliability scripts, each on a small real run, write their sections of docs/reliability.md.

The figures are not asserted here (the scripts' tables hold them); what is asserted is that each
script runs, classifies what it tried, and writes its section between its own markers.
"""

from __future__ import annotations

import pytest

from scripts import hostile_entry_points, kill_resume, load_test

pytestmark = pytest.mark.slow


def test_load_test_writes_its_section_with_the_memory_goal(tmp_path):
    output = tmp_path / "reliability.md"
    assert load_test.main(["--users", "2", "--duration", "4", "--checkpoint", str(tmp_path / "none"),
                           "--output", str(output)]) == 0
    text = output.read_text()
    assert "<!-- load:start -->" in text and "goal <= +500 MB: **met**" in text
    assert "unexpected failures: **0**" in text and "Raw-HTTP server paths answered alike: **yes**" in text
    assert "| /etc/shadow | raw HTTP, no upload | 1 | error: Only images uploaded" in text


def test_kill_resume_writes_a_trial_whose_weights_equal_the_uninterrupted_run(tmp_path):
    output = tmp_path / "reliability.md"
    assert kill_resume.main(["--trials", "1", "--output", str(output)]) == 0
    text = output.read_text()
    assert "<!-- kill_resume:start -->" in text and "final weights equal to the uninterrupted run's: **1 of 1**" in text
    assert "| 1 | training: " in text and "checkpoint write: " in text and "resume start-up: " in text


def test_hostile_entry_points_write_both_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(hostile_entry_points, "DATASETS", [
        case for case in hostile_entry_points.DATASETS if case[0] in ("good", "truncated_image")])
    monkeypatch.setattr(hostile_entry_points, "FOLDERS", [
        case for case in hostile_entry_points.FOLDERS if case[0] in ("good", "metric_text", "thumbnail_cut")])
    output = tmp_path / "reliability.md"
    assert hostile_entry_points.main(["--output", str(output)]) == 0
    text = output.read_text()
    assert "| good | the untouched dataset | results | results |" in text
    assert "| truncated_image | a test image cut in half | error | results |" in text
    assert "| metric_text | a metric as a string | error |" in text
    assert "| thumbnail_cut | a thumbnail cut in half | results | thumbnail " in text
    assert "**0 crashes**" in text
