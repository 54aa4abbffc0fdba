"""The simulated board's RS485 port: the bytes waiting for the firmware's
UART, the bytes it sent, and the pseudo-terminal a host opens like a
serial port (optional: tests may inject and collect bytes directly).

The simulator's lock is held around every call but open() and close().
"""
import os
import tty


class Rs485:
    def __init__(self, link_path=None):
        self.link_path = link_path  # the pty's symlink, or None: no pty
        self.rxq = bytearray()  # received, not yet read by the firmware
        self.tx = bytearray()  # everything the firmware sent
        self.on_transmit = None  # called with every chunk the firmware sends
        self.master = None  # the pty's master fd, non-blocking
        self._slave = None

    def open(self):
        """The pty, with link_path a symlink to its slave end."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        d = os.path.dirname(os.path.abspath(self.link_path))
        os.makedirs(d, exist_ok=True)
        if os.path.islink(self.link_path) or os.path.exists(self.link_path):
            os.unlink(self.link_path)
        os.symlink(os.ttyname(slave), self.link_path)

    def close(self):
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None
        if self.link_path and os.path.islink(self.link_path):
            os.unlink(self.link_path)

    def drain(self):
        """What a host wrote to the pty, onto rxq."""
        if self.master is None:
            return
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.rxq += chunk

    def transmit(self, data):
        """The firmware sends data: to tx, on_transmit and the pty."""
        self.tx += data
        if self.on_transmit:
            self.on_transmit(data)
        if self.master is not None:
            try:
                os.write(self.master, data)
            except (BlockingIOError, OSError):
                pass  # nobody reading: a real bus drops it too
