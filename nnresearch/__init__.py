"""nnresearch: every claim of an introductory neural-networks chapter as a re-runnable experiment."""

import os

__version__ = "0.1.0"

# No MLflow usage telemetry leaves the machine unless the user asks for it. MLflow reads this when
# it is imported, and every module here is imported through this package, so it is set first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
