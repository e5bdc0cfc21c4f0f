"""One script per study: MLflow runs -> pandas -> a matplotlib figure and a verdict on the chapter's claim.

Run from the repository root: `python -m analysis.<study>`, or `python -m analysis.report` for all.
"""
