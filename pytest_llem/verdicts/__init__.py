"""Verdicts over study results: per-configuration statistics across cycles, and what they allow us to say."""
