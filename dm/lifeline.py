"""A supervised child stops when its supervisor dies.

``tie_to_supervisor()`` is called first thing by the entry points of the processes the
supervisor starts (``dm worker``, ``dm persist``, ``dm replay``). When ``$DM_SUPERVISOR_PID``
is set (the supervisor sets it for its children), it asks Linux to send this process SIGTERM
when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, prctl(2)), then closes the race in
which the parent died before that call: if the parent is no longer ``$DM_SUPERVISOR_PID`` (the
orphan was re-parented), the process exits at once. The child's own SIGTERM handling then
drains and exits as on a normal stop. Without ``$DM_SUPERVISOR_PID`` (run by hand) it does
nothing.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tie_to_supervisor(env=None) -> bool:
    """Arrange SIGTERM on supervisor death. Returns True when tied (``$DM_SUPERVISOR_PID`` set);
    exits the process (code 0) when the supervisor is already gone."""
    env = os.environ if env is None else env
    sup = env.get("DM_SUPERVISOR_PID", "")
    if not sup.isdigit():
        return False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != int(sup):
        sys.stderr.write(f"dm: supervisor pid {sup} is gone; not starting\n")
        sys.exit(0)
    return True
