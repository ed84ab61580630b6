"""fpf-client: talk to an fpf server and work with its results, without torch or TensorFlow."""

from .aio import AsyncClient, AsyncJob
from .client import Client, Job
from .errors import ErrorCode, FpfError
from .fixed_points import FixedPoints
from .options import FinderOptions
from .records import JobProgress, JobRecord, JobTimings, Model

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ErrorCode",
    "FinderOptions",
    "FixedPoints",
    "FpfError",
    "Job",
    "JobProgress",
    "JobRecord",
    "JobTimings",
    "Model",
]
