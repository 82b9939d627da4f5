"""What one experiment is: the typed configuration every layer speaks.

The bottom of the house (above ``errors`` and ``naming`` only): the study grammar builds these
models from YAML, the runner hands one to the cell's child, engines receive their own section,
and results and verdicts name the metrics declared here. Declared once, validated by pydantic.
"""
