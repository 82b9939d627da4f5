"""Running a study's cells from the parent's side: its directory and manifest, and idle power.

Knows nothing of pytest: :mod:`pytest_llem.session` hands it cells in run order.
"""
