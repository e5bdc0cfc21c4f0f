"""The training core, written against the array namespace of its inputs (NumPy, CuPy, array-api-strict).

It never imports Hydra, MLflow or pandas.
"""
