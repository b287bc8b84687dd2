"""Reporting: metrics files, learning curves, result tables."""
