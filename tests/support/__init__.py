"""Helpers shared by the test modules (test_*.py files never import each other; conftest.py exposes the fixtures)."""
