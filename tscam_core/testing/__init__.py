"""Test support shared by the test suite and the reliability scripts (no pytest dependency)."""
