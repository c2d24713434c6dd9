"""Scoring library (pure: numpy/scipy, no DB, no service code)."""
