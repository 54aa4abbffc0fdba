"""The connection to one BMS over Modbus RTU (RS485) with pymodbus: reads
of whole register tables, writes of parameters and control registers, and
the error a user can act on (CtlError). Nothing here prints.
"""
import logging
import os
import time
from contextlib import contextmanager

from bms.spec import paramtable as PT
from bms import params as P
from bms import regmap as M
from bms.spec import regtable as RT
from bmsctl import config as CF
from bmsctl import regs as RG


DEFAULT_PORT = os.path.join("build", "ttyBMS")


class CtlError(Exception):
    """A problem the user can fix; the message says how."""

    def __init__(self, msg, code=2):
        super().__init__(msg)
        self.code = code


class Bms:
    """One BMS on a serial line."""

    def __init__(self, port, unit=1, baud=19200, parity="E", timeout=1.0):
        from pymodbus import FramerType
        from pymodbus.client import ModbusSerialClient

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        if not os.path.exists(port):
            raise CtlError(
                "cannot open serial port %r: no such device. Start the simulator with "
                "`bms-sim run` (it prints the link path, by default %s), or give your RS485 "
                "adapter's port, e.g. --port /dev/ttyUSB0." % (port, DEFAULT_PORT))
        self.port = port
        self.unit = unit
        self.timeout = timeout
        if is_pseudo_terminal(port):
            parity = "N"  # a pty carries bytes, not bits: Linux refuses parity on it
        stopbits = 2 if parity == "N" else 1  # Modbus RTU: 11 bits per character
        self.client = ModbusSerialClient(port, framer=FramerType.RTU, baudrate=baud, bytesize=8,
                                         parity=parity, stopbits=stopbits, timeout=timeout, retries=2)
        if not self.client.connect():
            raise CtlError("cannot open serial port %r: another program holds it (only one may), "
                           "or your user lacks permission (on Linux, join the dialout group)." % port)

    def close(self):
        self.client.close()

    def _read(self, fn, start, count):
        try:
            rr = fn(start, count=count, device_id=self.unit)
        except Exception as e:  # pymodbus raises ModbusException subclasses on timeouts
            raise CtlError("no reply from unit %d on %s within %.1f s (%s): check --unit, "
                           "--baud and the wiring, and that the BMS is running."
                           % (self.unit, self.port, self.timeout, e), code=3)
        if rr.isError():
            raise CtlError("unit %d answered with an error: %s" % (self.unit, rr), code=3)
        return rr.registers

    def read_table(self, table):
        regs = RT.INPUT_REGS if table == "input" else PT.TABLE
        fn = self.client.read_input_registers if table == "input" else self.client.read_holding_registers
        words = [0] * RG.span(regs)[1]
        # read mapped runs only: a gap in the map answers exception 02
        for a, n in _runs(regs):
            words[a:a + n] = self._read(fn, a, n)
        return RG.decode(regs, words)

    def status(self):
        return {"input": self.read_table("input"), "holding": self.read_table("holding")}

    # -- parameters and control ------------------------------------------------

    def read_values(self):
        """Every parameter's raw value, by bms.params index (the PIN reads 0)."""
        return CF.values_from_holding(self.read_table("holding"))

    def read_input(self, addr, count):
        return self._read(self.client.read_input_registers, addr, count)

    def config_state(self):
        return self.read_input(M.IR_CONFIG_STATE, 1)[0]

    def config_error(self):
        return self.read_input(M.IR_CONFIG_ERROR, 1)[0]

    def read_live(self):
        """Every input register but the event window, decoded (raw values)."""
        regs = live_regs()
        words = [0] * RG.span(regs)[1]
        for a, n in _runs(regs):
            words[a:a + n] = self.read_input(a, n)
        return RG.decode(regs, words)

    def newest_boot(self):
        """(boot number of the newest event-log record or None, uptime_s)."""
        w = self.read_input(M.IR_EVENTS, M.EVENT_WORDS)
        rec = RG.decode(((0, "e", "event", 1, 0, ""),), w)["e"]
        up = self.read_input(M.IR_UPTIME_S, 2)
        return (rec["boot"] if rec else None), (up[0] << 16) | up[1]

    def _write(self, fn, addr, value):
        try:
            rr = fn(addr, value, device_id=self.unit)
        except Exception as e:
            raise CtlError("no reply from unit %d on %s within %.1f s to a write (%s): check the link; the "
                           "write may or may not have been taken (`bmsctl config get` shows what the BMS holds)"
                           % (self.unit, self.port, self.timeout, e), code=3)
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            return code or 4
        return 0

    def write_params(self, addr, words):
        """FC16; 0 or the Modbus exception code."""
        return self._write(self.client.write_registers, addr, list(words))

    def write_control(self, addr, value):
        """FC06 to a control register; 0 or the exception code."""
        return self._write(self.client.write_register, addr, value)

    def device_id(self):
        """{vendor, product, version} from FC 0x2B/0x0E, or None."""
        try:
            rr = self.client.read_device_information(read_code=1, object_id=0, device_id=self.unit)
            if rr.isError():
                return None
            info = rr.information
            return {k: info[i].decode("utf-8", "replace") for i, k in enumerate(("vendor", "product", "version"))
                    if i in info}
        except Exception:
            return None

    def follow(self, values):
        """After a write of the serial settings: talk the way the BMS now listens."""
        self.unit = values[P.P_MODBUS_ADDRESS]
        baud = values[P.P_MODBUS_BAUD]
        parity = "NEO"[values[P.P_MODBUS_PARITY]] if 0 <= values[P.P_MODBUS_PARITY] <= 2 else "E"
        if is_pseudo_terminal(self.port):
            return
        cp = self.client.comm_params
        if cp.baudrate != baud or cp.parity != parity:
            self.client.close()
            cp.baudrate, cp.parity, cp.stopbits = baud, parity, 2 if parity == "N" else 1
            time.sleep(0.05)
            self.client.connect()

    @contextmanager
    def quick(self, timeout=0.3):
        """Short timeouts and no retries: for polling a BMS that is restarting."""
        tm = getattr(self.client, "transaction", None)
        cp = getattr(self.client, "comm_params", None)
        saved = (getattr(tm, "retries", None), getattr(cp, "timeout_connect", None))
        try:
            if saved[0] is not None:
                tm.retries = 0
            if saved[1] is not None:
                cp.timeout_connect = timeout
            yield
        finally:
            if saved[0] is not None:
                tm.retries = saved[0]
            if saved[1] is not None:
                cp.timeout_connect = saved[1]


def live_regs():
    """The input-register rows `log` records: all but the event window."""
    return tuple(r for r in RT.INPUT_REGS if r[2] != "event")


def is_pseudo_terminal(port):
    """True for the simulator's link (a /dev/pts/N, maybe behind a symlink)."""
    return os.path.realpath(port).startswith("/dev/pts/")


def _runs(regs):
    """Contiguous mapped address runs of a table, each at most 125 registers."""
    addrs = sorted({r[0] + k for r in regs for k in range(RT.WORDS[r[2]] * r[3])})
    runs = []
    for a in addrs:
        if runs and runs[-1][0] + runs[-1][1] == a and runs[-1][1] < 125:
            runs[-1][1] += 1
        else:
            runs.append([a, 1])
    return [tuple(r) for r in runs]


def connect(args):
    return Bms(args.port, unit=args.unit, baud=args.baud, parity=args.parity, timeout=args.timeout)
