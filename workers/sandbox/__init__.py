"""The model sandbox: every model load and engine run happens in a bubblewrap child.

The worker keeps a warm child per owner (:class:`SandboxPool`) and talks to it in
length-prefixed frames (:mod:`.frames`); the child (:mod:`.child`) sees only a read-only
Python and engine, a private /tmp, no network, no data directory and no secrets. What is
and is not isolated is written up in docs/operations.md ("Sandbox").

Nothing here imports the gateway's modules or torch: the child imports this package too.
"""

from .command import Limits, SandboxUnavailable, probe, spawn
from .pool import SandboxPool
from .process import BatchJob, BatchListener, Deadline, Listener, RequestTimedOut, Sandbox, SandboxFailure

__all__ = [
    "BatchJob",
    "BatchListener",
    "Deadline",
    "Limits",
    "Listener",
    "RequestTimedOut",
    "Sandbox",
    "SandboxFailure",
    "SandboxPool",
    "SandboxUnavailable",
    "probe",
    "spawn",
]
