"""A 16-cell pack through every host tool: the firmware's own Modbus slave
(bms.modbus_rtu), register images and parameter bank (bms.regimage,
bms.config) on CPython, serving a 16-cell register image on a pty, read by
pymodbus, `bmsctl status`, the CSV log and the dashboard's poller.

The image is filled with known values the way bms.publish fills it
(MAX_CELLS cells from IR_CELL_MV on), so every host tool is checked against
exact figures; the firmware's own publish of a 16-cell bq76952 pack runs end
to end in tests/e2e/test_e2e_balancing.py.
"""
import io
import json
import os
import threading
import time
import tty

import pytest
from bms import params as P
from bms import paramload as PL
from bms import regmap as M
from bms.config import Config
from bms.measurements import Measurements
from bms.modbus_rtu import ModbusSlave
from bms.regimage import RegisterImage
from bms.spec import regtable as RT
from bmsctl import cli as ctl
from bmsctl import client, csvlog
from bmsctl import fmt
from conftest import rtu_client

CELLS = 16
CELL_MV = [3300 + 3 * k for k in range(CELLS)]  # cell 16 the highest: 3345 mV
CELL_MV[6] = 3290  # cell 7 the lowest
BLEEDING = 1 << 15  # cell 16 bleeding: bit 15 of balance_mask


class _Pty:
    """machine.UART's readinto/write on the master end of a pty."""

    def __init__(self, master):
        self.master = master

    def readinto(self, buf):
        try:
            data = os.read(self.master, len(buf))
        except BlockingIOError:
            return None
        buf[:len(data)] = data
        return len(data)

    def write(self, buf, n):
        return os.write(self.master, bytes(buf[:n]))


class Pack16:
    """The firmware's Modbus side for a 16-cell LFP pack, served on `link`
    until close()."""

    def __init__(self, link):
        prm = P.Params()
        PL.load_text(prm, "chemistry=lfp\ncells=15\ncapacity_mah=280000\n")
        # every input of a 16-input AFE (the firmware takes the mask; which
        # chip takes it is bms.afe.chips' business)
        prm.values[P.P_CELL_CHANNELS] = 0xFFFF
        self.hr = RegisterImage(M.HR_SIZE)
        self.ir = RegisterImage(M.IR_SIZE, RT.mapped_mask(RT.INPUT_REGS, M.IR_SIZE))
        self.cfg = Config(prm, self.hr, self.ir, lambda code, value, t: None)
        self._fill(prm)
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds = (master, slave)
        self.link = str(link)
        os.symlink(os.ttyname(slave), self.link)
        self.modbus = ModbusSlave(_Pty(master), self, 1, 19200)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _fill(self, prm):
        m = Measurements(3)
        m.cells = prm.cells()
        for k, mv in enumerate(CELL_MV):
            m.cell_mv[k] = mv
        m.update_extremes()
        ir = self.ir
        # as bms.publish writes them
        ir.set_u16(M.IR_CELL_COUNT, m.cells)
        ir.set_u32(M.IR_PACK_MV, sum(CELL_MV))
        ir.set_u32(M.IR_CURRENT_MA, -12000)
        ir.set_u16(M.IR_CELL_MIN_MV, m.cell_min_mv)
        ir.set_u16(M.IR_CELL_MAX_MV, m.cell_max_mv)
        ir.set_u16(M.IR_CELL_SPREAD_MV, m.cell_max_mv - m.cell_min_mv)
        ir.set_u16(M.IR_CELL_MIN_NUM, m.cell_min_idx + 1)
        ir.set_u16(M.IR_CELL_MAX_NUM, m.cell_max_idx + 1)
        i = 0
        while i < M.MAX_CELLS:
            ir.set_u16(M.IR_CELL_MV + i, m.cell_mv[i] if i < m.cells else 0)
            i += 1
        for k in range(M.MAX_TEMPS):
            ir.set_u16(M.IR_TEMP_DC + k, 251 if k == 0 else M.TEMP_INVALID)
        ir.set_u16(M.IR_FET_FLAGS, M.FET_CHG | M.FET_DSG)
        ir.set_u16(M.IR_BALANCE_MASK, BLEEDING)
        ir.set_u16(M.IR_SOC_DPCT, 612)
        ir.set_u16(M.IR_SOH_DPCT, 1000)
        ir.set_u32(M.IR_REMAINING_MAH, 171360)
        ir.set_u32(M.IR_FULL_CAPACITY_MAH, 280000)
        ir.set_u16(M.IR_TTE_MIN, 857)
        ir.set_u16(M.IR_TTF_MIN, 0xFFFF)
        ir.set_u32(M.IR_UPTIME_S, 3600)
        ir.set_u32(M.IR_EVENT_SEQ, 0)
        for k in range(M.EVENT_WINDOW):
            ir.set_u32(M.IR_EVENTS + k * M.EVENT_WORDS, 0xFFFFFFFF)  # an empty event log
        self.cfg.publish_state(0)

    # the register bank, as bms.app.App offers it
    def read_registers(self, fc, addr, count, out, off):
        return (self.ir if fc == 4 else self.hr).read_into(addr, count, out, off)

    def write_registers(self, addr, count, data, off, broadcast):
        return self.cfg.write(addr, count, data, off, broadcast, 0)

    def _serve(self):
        while not self._stop.is_set():
            self.modbus.poll(int(time.monotonic() * 1000) & 0x3FFFFFFF)
            time.sleep(0.0005)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for fd in self._fds:
            os.close(fd)
        os.unlink(self.link)


@pytest.fixture(scope="module")
def pack16(tmp_path_factory):
    p = Pack16(tmp_path_factory.mktemp("pack16") / "tty")
    try:
        yield p
    finally:
        p.close()


def test_pymodbus_reads_16_cells_in_one_request(pack16):
    c = rtu_client(pack16.link)
    try:
        rr = c.read_input_registers(M.IR_CELL_MV, count=16, device_id=1)
        assert not rr.isError(), rr
        assert rr.registers == CELL_MV
        # the 15-cell read and the register after the cells answer as before
        rr = c.read_input_registers(0x0020, count=15, device_id=1)
        assert rr.registers == CELL_MV[:15]
        rr = c.read_input_registers(0x0020, count=17, device_id=1)  # over cell 16 into hw_ov_applied_mv
        assert not rr.isError() and rr.registers[15] == CELL_MV[15]
    finally:
        c.close()


def test_bmsctl_status_shows_cell_16(pack16):
    bms = client.Bms(pack16.link)
    try:
        st = bms.status()
    finally:
        bms.close()
    assert st["input"]["cell_mv"] == CELL_MV
    d = fmt.status_dict(st)
    assert d["cell_count"] == 16 and d["cells_v"] == pytest.approx([v / 1000 for v in CELL_MV])
    assert d["cell_max_v"] == pytest.approx(3.345) and d["balancing_cells"] == [16]
    out = io.StringIO()
    assert ctl.main(["--port", pack16.link, "status"], out=out) == 0
    text = out.getvalue()
    line = [ln for ln in text.splitlines() if ln.strip().startswith("cell 16")]
    assert len(line) == 1 and "3.345 V" in line[0] and "bleeding" in line[0], text
    out = io.StringIO()
    assert ctl.main(["--port", pack16.link, "status", "--json"], out=out) == 0
    assert json.loads(out.getvalue())["cells_v"][15] == pytest.approx(3.345)


def test_the_csv_log_has_a_column_for_cell_16(pack16, tmp_path):
    path = tmp_path / "pack.csv"
    bms = client.Bms(pack16.link)
    try:
        rows, missed = csvlog.record(bms, str(path), 0.1, count=2)
    finally:
        bms.close()
    assert (rows, missed) == (2, 0)
    head, first = path.read_text().splitlines()[:2]
    row = dict(zip(head.split(","), first.split(",")))
    assert row["cell_count"] == "16" and row["cell_mv_16"] == "3.345" and row["cell_mv_1"] == "3.300"


def test_the_dashboard_state_has_16_cells(pack16):
    from bmsctl.dashboard.source import ModbusSource

    src = ModbusSource(client.Bms(pack16.link), interval=0.5)
    try:
        s = src.poll()
    finally:
        src.close()
    assert s["ok"], s
    assert s["cell_count"] == 16 and [c["n"] for c in s["cells"]] == list(range(1, 17))
    assert s["cells"][15] == {"n": 16, "v": 3.345, "balancing": True}
    assert not any(c["balancing"] for c in s["cells"][:15])


@pytest.mark.slow
def test_the_page_fits_16_cells(pack16, tmp_path):
    """The dashboard in Chromium: 16 cell bars, cell 16 marked bleeding, and
    the row of cells inside its card (no bar cut off) on a desktop and a
    phone-sized window (one browser, resized: a launch costs seconds)."""
    from bmsctl.dashboard import browser
    from bmsctl.dashboard.server import DashboardServer
    from bmsctl.dashboard.source import ModbusSource

    why = browser.available()
    if why:
        pytest.skip(why)
    src = ModbusSource(client.Bms(pack16.link), interval=0.5)
    src.poll()
    src.start()
    httpd = DashboardServer(src, "127.0.0.1", 0)
    httpd.start_thread()
    problems = []
    try:
        with browser.chromium(str(tmp_path / "profile"), width=1280) as ctx:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            for width in (1280, 420):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(httpd.url)
                page.wait_for_selector(".cell:nth-child(16) .fill")
                assert page.locator(".cell").count() == 16
                assert page.inner_text(".cell:nth-child(16) .n") == "cell 16"
                assert "balancing" in page.get_attribute(".cell:nth-child(16)", "class")
                # every bar inside the cells' box, none past its right edge
                fit = page.evaluate("""() => {
                    const box = document.getElementById('cells').getBoundingClientRect();
                    return [...document.querySelectorAll('.cell')].every(
                        (c) => c.getBoundingClientRect().right <= box.right + 0.5);
                }""")
                assert fit, "a cell runs past the cells' card at %d px" % width
                page.screenshot(path=str(tmp_path / ("cells16-%d.png" % width)), full_page=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
        src.close()
    assert problems == []
