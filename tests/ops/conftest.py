"""Fixtures of the operations tests."""

from __future__ import annotations
