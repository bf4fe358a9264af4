"""How a process that is not our child ended: the proc connector.

Only a parent can wait for a process; once it reaped it (a container's
init or shim does so at once), /proc no longer holds its exit code. The
kernel's proc connector (NETLINK_CONNECTOR, CN_IDX_PROC; include/uapi/linux/
cn_proc.h, Linux 2.6.15+) multicasts a PROC_EVENT_EXIT with the exit code of
every task as it exits (proc_exit_connector in do_exit, before the parent is
notified). Listening needs CAP_NET_ADMIN; without it :class:`ExitWatch` is
simply not available.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Optional

__all__ = ["ExitWatch"]

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3
# struct nlmsghdr (16 bytes), struct cn_msg (20 bytes), then struct proc_event:
# what, cpu, timestamp_ns, and for PROC_EVENT_EXIT process_pid, process_tgid,
# exit_code, exit_signal.
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")
_EXIT = struct.Struct("=IIII")


class ExitWatch:
    """Listens for the exit of process ``pid`` (its thread-group leader) from
    a daemon thread; :meth:`status` is its wait status once seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._status: Optional[int] = None
        #: CLOCK_MONOTONIC seconds of the exit (the event's ktime_get_ns()), once seen.
        self.when: Optional[float] = None
        self._seen = threading.Event()
        self.available = False
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError:
            return
        try:
            self._sock.bind((0, CN_IDX_PROC))
            op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
            self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)
        except OSError:  # EPERM without CAP_NET_ADMIN
            self._sock.close()
            return
        self.available = True
        threading.Thread(target=self._listen, name="memscan-exits", daemon=True).start()

    def _listen(self) -> None:
        head = _NLMSGHDR.size + _CN_MSG.size
        while not self._seen.is_set():
            try:
                data = self._sock.recv(4096)
            except OSError:
                return  # closed
            if len(data) < head + _EVENT.size + _EXIT.size:
                continue
            what, _, ns = _EVENT.unpack_from(data, head)
            if what != PROC_EVENT_EXIT:
                continue
            tid, tgid, code, _ = _EXIT.unpack_from(data, head + _EVENT.size)
            if tid == tgid == self.pid:
                self._status = code
                self.when = ns / 1e9
                self._seen.set()

    def status(self, timeout: float = 0.0) -> Optional[int]:
        """The wait status (exit code << 8, or the signal) once the exit was
        seen, waiting up to ``timeout`` seconds for it; None if not seen."""
        if self.available:
            self._seen.wait(timeout)
        return self._status

    def close(self) -> None:
        if self.available:
            self._seen.set()
            self._sock.close()
