"""fpf-client: talk to an fpf server and work with its results, without torch or TensorFlow."""

from .errors import ErrorCode, FpfError
from .fixed_points import FixedPoints
from .options import FinderOptions

__all__ = ["ErrorCode", "FinderOptions", "FixedPoints", "FpfError"]
