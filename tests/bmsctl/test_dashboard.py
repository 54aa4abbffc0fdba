"""bmsctl dashboard: the JSON API against the firmware under MicroPython on
a simulated pack, config writes through the same checks as `bmsctl config
set`, and the page itself in Debian's headless Chromium (skipped without it)."""
import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from bms.spec import paramtable as PT
from bmsctl import cli
from bmsctl import client
from bmsctl.dashboard import add_command, browser
from conftest import ROOT, ctrl_c_stops, lfp4_sim, rtu_client

ADDR = {r[1]: r[0] for r in PT.TABLE}


class Dash:
    def __init__(self, sim, src, httpd):
        self.sim, self.src, self.httpd = sim, src, httpd
        self.url = httpd.url

    def get(self, path):
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as r:
            return json.load(r)

    def post(self, path, body, ctype="application/json"):
        req = urllib.request.Request(self.url.rstrip("/") + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def holding(self, name):
        """A parameter read over Modbus by a client of our own, not the dashboard's
        (which lets go of the port meanwhile: one master on the line)."""
        with self.src.paused():
            c = rtu_client(self.sim.link_path)
            try:
                rr = c.read_holding_registers(ADDR[name], count=1, device_id=1)
            finally:
                c.close()
        assert not rr.isError(), rr
        return rr.registers[0]

    def charger(self, on):
        with self.sim.lock:
            if on:
                self.sim.world.charger.set(5000, 3600)
            else:
                self.sim.world.charger.off()
        self.sim.set_input("charger", on)

    def wait_state(self, cond, timeout=15, what="state"):
        deadline = time.monotonic() + timeout
        while True:
            s = self.get("/api/state")
            if s.get("ok") and cond(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError("%s not reached in %g s: %s" % (what, timeout, s))
            time.sleep(0.1)


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    from bmsctl.dashboard.server import DashboardServer
    from bmsctl.dashboard.source import ModbusSource

    tmp = tmp_path_factory.mktemp("dashboard")
    with lfp4_sim(tmp / "flash", tmp / "tty", speed=20.0, soc_pct=60.0, seed=5) as sim:
        src = ModbusSource(client.Bms(sim.link_path), interval=0.5)
        src.poll()
        src.start()
        httpd = DashboardServer(src, "127.0.0.1", 0)
        httpd.start_thread()
        try:
            yield Dash(sim, src, httpd)
        finally:
            httpd.shutdown()
            httpd.server_close()
            src.close()


# -- the API on the simulated pack ------------------------------------------------

def test_state_is_plausible_and_follows_the_charger(dash):
    dash.charger(False)
    s = dash.wait_state(lambda s: abs(s["current_a"]) < 0.1, what="no current")
    assert s["cell_count"] == 4 and len(s["cells"]) == 4
    assert all(2.5 < c["v"] < 3.65 and c["balancing"] in (True, False) for c in s["cells"])
    assert abs(s["pack_v"] - sum(c["v"] for c in s["cells"])) < 0.1
    assert 40 < s["soc_pct"] < 80 and 0 < s["remaining_ah"] <= s["full_capacity_ah"] == 10.0
    assert s["remaining_wh"] > 0 and s["temps_c"][0] == pytest.approx(25.0, abs=2)
    assert s["charge_fet"] and s["discharge_fet"] and s["power"]["mode"] == "working"
    assert s["alerts"] == [] and s["config_state"]["configured"] and s["uptime_s"] > 0
    assert s["limits"]["cell_ov_v"] == 3.65 and s["chemistry"] == "lfp"
    soc0, t0 = s["soc_pct"], s["t"]

    dash.charger(True)
    s = dash.wait_state(lambda s: s["current_a"] > 4.5 and s["soc_pct"] > soc0, what="charging")
    assert s["power_w"] > 50 and s["time_to_full_min"] is not None
    h = dash.get("/api/history")
    assert h["interval"] == 0.5 and h["samples"][-1]["a"] > 4.5
    assert all(a["t"] < b["t"] for a, b in zip(h["samples"], h["samples"][1:]))
    newer = dash.get("/api/history?since=%r" % t0)["samples"]
    assert newer and all(x["t"] > t0 for x in newer)
    ev = dash.get("/api/events")["events"]
    assert ev and all(e["text"] for e in ev) and ev[0]["seq"] > ev[-1]["seq"]
    assert any("Reset cause: power-on" in e["text"] for e in ev)
    assert dash.src.errors == 0


def test_config_refuses_a_bad_value_and_writes_nothing(dash):
    before = dash.holding("cell_ov_mv")
    seq = dash.get("/api/state")["event_seq"]

    st, r = dash.post("/api/config", {"set": {"cell_ov": "9.99V"}, "pin": "1234"})
    assert st == 400 and r["ok"] is False
    assert r["error"] == "cell_ov_mv=9990 (9.990 V) is outside 1.500..5.000 V; nothing was written"
    st, r = dash.post("/api/config", {"set": ["cell_ov_warn=3.70V"], "pin": "1234"})
    assert st == 400 and r["error"].startswith("the set would break rule ") and "cell_ov_warn_mv=3700" in r["error"]
    st, r = dash.post("/api/config", {"set": {"cell_ov": "3.62V"}})
    assert st == 400 and "parameter writes are locked" in r["error"] and "nothing was written" in r["error"]
    st, r = dash.post("/api/config", {"set": {"cell_vo": "3.62V"}, "pin": "1234"})
    assert st == 400 and "unknown parameter 'cell_vo'" in r["error"] and "cell_ov" in r["error"]
    st, r = dash.post("/api/config", {"set": {"cell_ov": "3.62V"}, "pin": "1234"}, ctype="text/plain")
    assert st == 415 and r["ok"] is False

    assert dash.holding("cell_ov_mv") == before
    assert dash.get("/api/state")["event_seq"] == seq, "nothing reached the BMS: no event logged"


def test_config_write_reads_back_and_survives_a_restart(dash):
    cfg = dash.get("/api/config")
    p = {x["name"]: x for x in cfg["parameters"]}
    assert p["cell_ov_warn_mv"]["value"] == 3.6 and p["cell_ov_warn_mv"]["unit"] == "V"
    assert p["cell_ov_warn_mv"]["range"] == "1.500..5.000 V" and p["pin"]["value"] is None
    assert not cfg["state"]["unlocked"]

    st, r = dash.post("/api/config", {"set": {"cell_ov_warn": "3.58V"}, "pin": "1234"})
    assert st == 200 and r["ok"], r
    assert [(c["name"], c["new"], c["new_text"]) for c in r["changed"]] == [("cell_ov_warn_mv", 3580, "3.580 V")]
    assert r["requests"] == 1 and not r["restart_pending"] and r["mismatch"] == {}
    assert dash.holding("cell_ov_warn_mv") == 3580
    assert not dash.get("/api/config")["state"]["unlocked"], "locked again, as before the write"
    st, r = dash.post("/api/config", {"set": {"cell_ov_warn": "3.58V"}, "pin": "1234"})
    assert st == 200 and r["changed"] == [] and "nothing to change" in r["message"]

    n = dash.sim.restarts
    st, r = dash.post("/api/restart", {"pin": "1234"})
    assert st == 200 and r["restarted"] and r["configured"], r
    assert dash.sim.restarts == n + 1
    assert dash.holding("cell_ov_warn_mv") == 3580
    # the dashboard reads the new boot, and the FETs close again: the pack is configured
    dash.wait_state(lambda s: s["uptime_s"] < 60 and s["limits"]["cell_ov_warn_v"] == 3.58
                    and s["charge_fet"] and s["discharge_fet"], what="the BMS running again")


def test_storage_mode_from_the_dashboard(dash):
    st, r = dash.post("/api/storage", {"on": True})
    assert st == 400 and "parameter writes are locked" in r["error"], r
    st, r = dash.post("/api/storage", {"on": "yes", "pin": "1234"})
    assert st == 400 and '{"on": true}' in r["error"]
    st, r = dash.post("/api/storage", {"on": True, "pin": "1234"})
    assert st == 200 and r["storage"] is True and r["storage_soc_pct"] == 50.0, r
    assert dash.holding("storage") == 1
    s = dash.wait_state(lambda s: s["storage"]["on"], what="storage mode shown")
    assert s["soc_window"]["charge_stop_pct"] == 100.0 and s["self_draw_a"] > 0.03
    st, r = dash.post("/api/storage", {"on": False, "pin": "1234"})
    assert st == 200 and r["storage"] is False and dash.holding("storage") == 0
    dash.wait_state(lambda s: not s["storage"]["on"], what="storage mode off")


def test_the_command_serves_and_stops_on_ctrl_c(dash):
    """`bmsctl dashboard` as a user starts it (here through python -m, the
    same handler), while the fixture's dashboard lets go of the line."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with dash.src.paused():
        proc = subprocess.Popen([sys.executable, "-m", "bmsctl.dashboard", "--port", dash.sim.link_path,
                                 "--http-port", "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=env, preexec_fn=ctrl_c_stops)
        try:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            url = json.loads(line)["url"]
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url + "api/state", timeout=10) as r:
                s = json.load(r)
            assert s["ok"] and s["cell_count"] == 4
            with urllib.request.urlopen(url, timeout=10) as r:
                page = r.read().decode()
                csp = r.headers["Content-Security-Policy"]
            assert "<title>BMS dashboard</title>" in page and "default-src 'self'" in csp
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sim_starts_the_simulated_pack_itself(tmp_path):
    """The one-command way in docs/DASHBOARD.md: `bmsctl dashboard --sim`."""
    proc = subprocess.Popen([sys.executable, "-m", "bmsctl.dashboard", "--sim", "--http-port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=ctrl_c_stops)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        info = json.loads(line)
        assert info["port"] == os.path.join("build", "ttyBMS-dashboard")
        assert os.path.islink(tmp_path / info["port"])
        with urllib.request.urlopen(info["url"] + "api/state", timeout=10) as r:
            s = json.load(r)
        assert s["ok"] and s["cell_count"] == 4 and s["chemistry"] == "lfp"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, proc.stderr.read()
        assert not os.path.lexists(tmp_path / info["port"]), "the simulator stopped with it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the same checks as `bmsctl config set`, without a link --------------------------

@pytest.mark.parametrize("assignments", [
    ["cell_ov=9.99V"], ["cell_ov_warn=3.70V"], ["cell_ov_release=3.5"], ["capacity=12.5Ah", "chg_ot=45C"],
    ["cell_ov_mv=3650.5"], ["nonsense=1"], ["cell_uv_warn=2.85V"],
])
def test_write_config_answers_as_bmsctl_config_set(assignments, monkeypatch, capsys):
    from bmsctl.dashboard.source import ModbusSource
    from test_bmsctl_config import configured

    cli_dev, dash_dev = configured(), configured()
    monkeypatch.setattr(client, "connect", lambda args: cli_dev)
    rc = cli.main(["config", "set"] + assignments + ["--pin", "1234", "--json"], out=io.StringIO())
    cli_err = capsys.readouterr().err
    src = ModbusSource(dash_dev, where="fake")
    try:
        r = src.write_config(dict(a.split("=", 1) for a in assignments), "1234")
        err = None
    except client.CtlError as e:
        err = "bmsctl: %s\n" % e
    assert (rc == 0) == (err is None)
    if err:
        assert err == cli_err and dash_dev.requests == []
    else:
        assert r["changed"] and dash_dev.read_values() == cli_dev.read_values()
    assert dash_dev.requests == cli_dev.requests


# -- the HTTP layer, on a source with no BMS behind it ---------------------------------

def test_http_layer_refuses_what_it_should():
    from bmsctl.dashboard.server import DashboardServer
    from bmsctl.dashboard.source import DataSource

    httpd = DashboardServer(DataSource(), "127.0.0.1", 0)
    httpd.start_thread()
    base = httpd.url.rstrip("/")

    def call(path, body=None, headers=None):
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers=headers or {}, method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    try:
        st, body = call("/api/state")
        assert st == 200 and json.loads(body) == {"ok": False, "error": "no reading from the BMS yet", "where": ""}
        assert call("/api/history")[0] == 200 and call("/api/history?since=x")[0] == 400
        assert call("/static/app.js")[0] == 200 and call("/static/../server.py")[0] == 404
        assert call("/static/.hidden.js")[0] == 404 and call("/nope")[0] == 404
        js = {"Content-Type": "application/json"}
        st, body = call("/api/config", {"set": {"cell_ov": "3.6"}}, dict(js, Origin="http://evil.example"))
        assert st == 403 and b"other sites" in body
        assert call("/api/config", {"set": {"cell_ov": "3.6"}}, js)[0] == 501
        assert call("/api/config")[0] == 501
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_page_names_no_other_host():
    import re

    from bmsctl.dashboard.server import STATIC

    for name in sorted(os.listdir(STATIC)):
        with open(os.path.join(STATIC, name)) as f:
            urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", f.read()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)  # the SVG namespace is a name, not a fetch


# -- the command's wiring -------------------------------------------------------------

def test_importing_it_loads_no_web_server_browser_or_simulator():
    code = ("import sys, bmsctl.dashboard; bad = [m for m in ('http.server', 'playwright', 'bms_sim', "
            "'bmsctl.dashboard.server', 'pymodbus') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_add_command_registers_dashboard_like_the_other_commands():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")

    def cmd(name, func, help):  # build_parser's helper, as plot and ha-modbus use it
        s = sub.add_parser(name, help=help)
        s.add_argument("--json", action="store_true")
        s.set_defaults(func=func)
        return s

    add_command(sub, cmd)
    a = p.parse_args(["dashboard"])
    assert (a.host, a.http_port, a.interval, a.sim, a.json) == ("127.0.0.1", 8080, 1.0, False, False)
    a = p.parse_args(["dashboard", "--host", "0.0.0.0", "--http-port", "0", "--interval", "0.5", "--sim"])
    assert (a.host, a.http_port, a.interval, a.sim) == ("0.0.0.0", 0, 0.5, True)
    with pytest.raises(SystemExit):
        p.parse_args(["dashboard", "--interval", "0"])


# -- the page in a real browser -------------------------------------------------------

def test_without_chromium_the_browser_test_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    assert browser.available() == "Debian's chromium is not installed: .ci/run installs it; apt-get install chromium"


@pytest.mark.slow
def test_the_page_in_chromium(dash, tmp_path):
    why = browser.available()
    if why:
        pytest.skip(why)
    dash.charger(False)
    dash.wait_state(lambda s: abs(s["current_a"]) < 0.1, what="no current")
    origin = dash.url.rstrip("/")
    requests, problems = [], []
    shot = tmp_path / "dashboard.png"
    with browser.chromium(str(tmp_path / "profile")) as ctx:
        ctx.on("request", lambda r: requests.append(r.url))
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(dash.url)
        page.wait_for_function("() => document.getElementById('soc').textContent.endsWith('%')")
        page.wait_for_selector(".cell:nth-child(4) .fill")
        assert page.inner_text("#link-text").startswith("live")
        assert page.inner_text("#fet-chg") == "ON" and "All clear" in page.inner_text("#alerts")
        soc0, cur0 = page.text_content("#soc"), page.inner_text("#current")
        assert abs(float(cur0)) < 0.1

        dash.charger(True)
        page.wait_for_function("() => parseFloat(document.getElementById('current').textContent) > 4.5",
                               timeout=15000)
        page.wait_for_function("s => document.getElementById('soc').textContent !== s", arg=soc0, timeout=15000)
        assert "Charging" in page.inner_text("#flow")
        page.wait_for_selector("#events tr")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20000

        # a setting changed in the page reaches the firmware and stays over a restart
        page.click("#tab-btn-settings")
        page.wait_for_selector("#params tr")
        page.fill("#cf-name", "cell_uv_warn")
        page.fill("#cf-value", "2.85V")
        page.fill("#cf-pin", "1234")
        page.click("#cf-apply")
        page.wait_for_selector("#cf-result.ok >> text=Written", timeout=15000)
        assert "cell_uv_warn_mv: 2.800 V → 2.850 V" in page.inner_text("#cf-result")
        assert dash.holding("cell_uv_warn_mv") == 2850

        page.fill("#cf-name", "cell_uv_warn")
        page.fill("#cf-value", "9V")
        page.click("#cf-apply")
        page.wait_for_selector("#cf-result.err", timeout=15000)
        assert "is outside" in page.inner_text("#cf-result") and "nothing was written" in page.inner_text("#cf-result")

        n = dash.sim.restarts
        page.click("#restart")
        page.click("#restart-yes")
        page.wait_for_selector("#restart-result.ok >> text=Restarted", timeout=20000)
        assert dash.sim.restarts == n + 1
        assert dash.holding("cell_uv_warn_mv") == 2850
        page.click("#tab-btn-live")
        page.wait_for_function("() => document.getElementById('link-text').textContent.startsWith('live')")

    assert requests and all(u.startswith(origin + "/") for u in requests), \
        [u for u in requests if not u.startswith(origin + "/")]
    # the one refused write answers 400, which Chromium logs; nothing else may go wrong
    assert [p for p in problems if "status of 400" not in p] == [] and len(problems) == 1, problems


@pytest.mark.slow
def test_the_page_over_mqtt_in_chromium(mqtt_broker, tmp_path):
    """`bmsctl dashboard --mqtt`: the firmware's own messages through a real
    broker; what the messages lack shows as --, offline as the link down,
    and the settings say they need the RS485 link."""
    why = browser.available()
    if why:
        pytest.skip(why)
    from test_dashboard_mqtt import MqttDash, event_message, pack_run

    run = pack_run(tmp_path / "pack")  # charging until a cell trips over-voltage
    d = MqttDash(mqtt_broker)
    origin = d.url.rstrip("/")
    requests, problems = [], []
    try:
        d.publish("status", b"online", retain=True)
        for rec in run.events:
            d.publish("event", event_message(rec))
        # and one without its boot number
        lock = dict(run.events[-1], seq=run.events[-1]["seq"] + 1, code=209, value=0)
        d.publish("event", event_message(lock, keys=("seq", "time_s", "code", "value")))
        for msg in run.states[-3:]:
            d.publish("state", msg)
        d.wait("/api/state", lambda s: s.get("ok") and s["event_seq"] == lock["seq"])
        with browser.chromium(str(tmp_path / "profile")) as ctx:
            ctx.on("request", lambda r: requests.append(r.url))
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(d.url)
            page.wait_for_function("() => document.getElementById('soc').textContent.endsWith('%')")
            page.wait_for_selector(".cell:nth-child(4) .fill")
            page.wait_for_selector("#events tr.trip")
            # a state as fresh as the link shows live: the browser may have
            # taken longer to start than the messages stay fresh
            d.publish("state", run.states[-1])
            page.wait_for_function("() => document.getElementById('link-text').textContent.startsWith('live')")
            assert page.text_content("#soc") == "100.0%" and page.inner_text("#full-ah") == "--"
            assert page.inner_text("#fet-chg") == "OFF" and page.inner_text("#fet-dsg") == "ON"
            assert "Protection: A cell is over-voltage" in page.inner_text("#alerts")
            assert page.inner_text("#inputs") == "network on" and page.inner_text("#mode") == "working"
            assert page.inner_text("#where") == "on bms/dev1 via MQTT 127.0.0.1:%d" % mqtt_broker.port
            assert "the cells' own range" in page.inner_text(".legend")
            rows = [page.inner_text("#events tr:nth-child(%d)" % i).split("\t") for i in (1, 2)]
            t = lock["time_s"]  # the trip's time in the run (h:mm:ss)
            at = "%d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60)
            assert t > 60 and rows[0] == [str(lock["seq"]), "--", at, "Settings locked"]
            assert rows[1] == ["8", "0", at,
                               "Cell over-voltage: protection tripped at 3.655 V (charging stopped)"]
            body = page.inner_text("body")
            assert not [w for w in ("null", "undefined", "NaN") if w in body], body

            # the BMS drops off: the broker publishes its will, the page shows the link down
            d.device.loop_stop()
            d.device.socket().close()
            d.device = None
            page.wait_for_function("() => document.getElementById('link-text').textContent"
                                   " === 'no reply from the BMS'", timeout=10000)
            assert "the BMS is offline" in page.inner_text("#banner")
            assert page.text_content("#soc") == "100.0%", "the last values stay"

            page.click("#tab-btn-settings")
            page.wait_for_selector("#cf-result.err", timeout=10000)
            assert "only watches" in page.inner_text("#cf-result") and "RS485" in page.inner_text("#cf-result")
    finally:
        d.close()
    assert requests and all(u.startswith(origin + "/") for u in requests), \
        [u for u in requests if not u.startswith(origin + "/")]
    # the settings' refused read answers 502, which Chromium logs; nothing else may go wrong
    assert [p for p in problems if "status of 502" not in p] == [], problems
