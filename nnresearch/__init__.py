"""nnresearch: every claim of an introductory neural-networks chapter as a re-runnable experiment."""

import os

__version__ = "0.1.0"

# No MLflow usage telemetry leaves the machine unless the user asks for it. MLflow checks this before
# every event it would send (mlflow.telemetry.track), so setting it on importing any nnresearch module is enough.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
