"""The arrays of a job's result file, refused before they are written when they pass the size limit.

Used by the worker (whatever ran the engine) and by the sandboxed child (before it sends the
result over its pipe). Nothing here imports the gateway's modules or torch.
"""

from __future__ import annotations

import numpy as np

from fpf_client.errors import ResultTooLarge
from fpf_client.fixed_points import FixedPoints


def result_arrays(fixed_points: FixedPoints, max_bytes: int | None) -> dict[str, np.ndarray]:
    """The ``.npz`` members of ``fixed_points``.

    Raises
    ------
    ResultTooLarge
        When they would take more than ``max_bytes`` (``FPF_MAX_RESULT_BYTES``; None: no limit).
    """
    arrays = fixed_points.to_npz_arrays()
    size = sum(array.nbytes for array in arrays.values())
    if max_bytes is not None and size > max_bytes:
        raise ResultTooLarge(
            f"the result of {fixed_points.n} fixed points would take {size} bytes; the limit is {max_bytes} "
            "(ask for fewer points with max_n_unique, or leave out Jacobians with do_compute_jacobians=false)",
            limit=max_bytes,
            size_bytes=size,
        )
    return arrays
