"""FixedPointFinder's API on fpf: change one import line and a reference script runs here.

>>> from fpf_client.compat import FixedPointFinder, FixedPoints, plot_fps      # doctest: +SKIP
>>> fpf = FixedPointFinder(model.rnn, max_iters=10000, verbose=True)           # doctest: +SKIP
>>> unique_fps, all_fps = fpf.find_fixed_points(initial_states, inputs)        # doctest: +SKIP

Searches run on an fpf service (``url=`` or ``FPF_URL``) or, without one, in this process when
the engine is installed. torch is imported only when a torch module is passed. docs/migrating.md
maps every reference name to fpf's.
"""

from .finder import FixedPointFinder
from .fixed_points import FixedPoints, read_fps
from .fps_file import UnsafePickle, read_fps_dict
from .plot import plot_fps

__all__ = ["FixedPointFinder", "FixedPoints", "UnsafePickle", "plot_fps", "read_fps", "read_fps_dict"]
