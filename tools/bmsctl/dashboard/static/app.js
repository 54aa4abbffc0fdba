// bmsctl dashboard: polls this server's JSON API once per interval and draws
// the page. No libraries and nothing from other hosts (the server's CSP
// refuses them anyway).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    interval: 1,          // seconds between refreshes of the page (from /api/history)
    period: 1,            // seconds between readings of the BMS (over MQTT: its state period)
    samples: [],          // history, oldest first
    lastT: null,          // newest sample time (server unix s)
    span: 300,            // chart window, s
    eventSeq: null,       // refetch events when the BMS's counter moves
    params: [],           // /api/config parameters
    cellCount: 0,
    configLoaded: false,
    selected: null,       // full name of the parameter clicked in the table
  };

  // -- formatting ------------------------------------------------------------
  const none = (x) => x === null || x === undefined || Number.isNaN(x);
  const fmt = (x, d) => (none(x) ? "--" : Number(x).toFixed(d));
  function signed(x, d) {
    if (none(x)) return "--";
    const s = Number(x).toFixed(d);
    return Number(s) > 0 ? "+" + s : s.replace(/^-(0\.?0*)$/, "$1");
  }
  function hm(min) {
    if (none(min)) return "--";
    const h = Math.floor(min / 60), m = min % 60;
    return h ? `${h} h ${String(m).padStart(2, "0")} min` : `${m} min`;
  }
  function hms(s) {
    if (none(s)) return "--";
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(x).padStart(2, "0")}`;
  }
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setText(id, text) {
    const e = $(id);
    if (e.textContent !== text) e.textContent = text;
  }

  async function api(url, body) {
    const opts = { cache: "no-store" };
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers = { "Content-Type": "application/json" };
      opts.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, opts);
    } catch (e) {
      return { ok: false, offline: true, error: "the dashboard server does not answer (is `bmsctl dashboard` still running?)" };
    }
    try {
      const j = await r.json();
      if (!r.ok && j.ok === undefined) j.ok = false;
      return j;
    } catch (e) {
      return { ok: false, error: `HTTP ${r.status}` };
    }
  }

  // -- live values -------------------------------------------------------------
  function renderLink(s) {
    const link = $("link");
    const period = none(s.period_s) ? state.period : s.period_s;
    const fresh = s.ok && (none(s.age_s) || s.age_s < 3 * period + 2);
    link.classList.toggle("live", !!fresh);
    link.classList.toggle("down", !fresh);
    setText("link-text", s.offline ? "dashboard server stopped" : fresh ? `live · ${clock(s.t)}` : "no reply from the BMS");
    const b = $("banner");
    const msg = s.ok ? "" : s.error || "no data";
    b.hidden = !msg;
    setText("banner", msg + (msg && s.pack_v !== undefined ? " (showing the last values read)" : ""));
  }

  function renderCharge(s) {
    const soc = s.soc_pct;
    setText("soc", none(soc) ? "--" : `${fmt(soc, 1)}%`);
    const arc = $("soc-arc");
    const p = none(soc) ? 0 : Math.max(0, Math.min(100, soc));
    arc.setAttribute("stroke-dasharray", `${p} ${100 - p}`);
    arc.classList.toggle("low", p < 15);
    arc.classList.toggle("mid", p >= 15 && p < 30);
    setText("rem-ah", fmt(s.remaining_ah, 2));
    setText("rem-wh", fmt(s.remaining_wh, 1));
    setText("full-ah", fmt(s.full_capacity_ah, 2));
    setText("soh", fmt(s.soh_pct, 1));
    setText("cycles", fmt(s.cycles, 2));
    if (!none(s.time_to_full_min)) {
      setText("eta-label", "Full in");
      setText("eta", hm(s.time_to_full_min));
    } else if (!none(s.time_to_empty_min)) {
      setText("eta-label", "Empty in");
      setText("eta", hm(s.time_to_empty_min));
    } else {
      setText("eta-label", "Time left");
      setText("eta", "--");
    }
  }

  function renderPower(s) {
    setText("pack-v", fmt(s.pack_v, 2));
    setText("current", signed(s.current_a, 2));
    setText("power", signed(s.power_w, 1));
    const f = $("flow");
    const a = s.current_a || 0;
    const kind = a > 0.02 ? "charging" : a < -0.02 ? "discharging" : "idle";
    f.className = "flow " + kind;
    const w = Math.abs(s.power_w || 0).toFixed(1);
    setText("flow", kind === "charging" ? `Charging: ${w} W into the pack`
      : kind === "discharging" ? `Discharging: ${w} W out of the pack` : "Idle: no current through the pack");
  }

  function pill(id, on, whyId, why) {
    const e = $(id);
    e.className = "pill " + (on ? "on" : "off");
    setText(id, on ? "ON" : "OFF");
    setText(whyId, on ? "" : why ? `off: ${why}` : "");
  }

  function renderStates(s) {
    pill("fet-chg", s.charge_fet, "fet-chg-why", s.charge_off_text || s.charge_off_reason);
    pill("fet-dsg", s.discharge_fet, "fet-dsg-why", s.discharge_off_text || s.discharge_off_reason);
    const pw = s.power || {};
    setText("mode", pw.mode || "--");
    setText("mode-why", pw.mode && !none(pw.mode_time_s) ? `since ${hms(pw.mode_time_s)} (${pw.cause})` : "");
    const inputs = ["charger", "acc", "button"];
    const ins = inputs.filter((k) => pw[k]).map((k) => (k === "acc" ? "ACC" : k));
    if (pw.network) ins.push("network on");
    // over MQTT the inputs are not known: "--", not "none"
    setText("inputs", ins.length ? ins.join(", ") : inputs.every((k) => none(pw[k])) ? "--" : "none");
    // the SOC window and storage mode (settings soc_min/soc_max/storage), the board's own draw
    const w = s.soc_window || {};
    const held = [];
    if (w.charge_stopped) held.push("charge stopped at the top");
    if (w.discharge_stopped) held.push("discharge stopped at the bottom");
    if (w.low_warning) held.push("SOC low");
    let range = "--";
    if (!none(w.charge_stop_pct) && !none(w.discharge_stop_pct)) {
      range = w.charge_stop_pct < 100 || w.discharge_stop_pct > 0
        ? `${fmt(w.discharge_stop_pct, 1)}-${fmt(w.charge_stop_pct, 1)} %` : "off";
    }
    setText("soc-window", held.length ? `${range}: ${held.join(", ")}` : range);
    const st = s.storage || {};
    setText("storage", none(st.on) ? "--" : st.on ? "ON" : "OFF");
    let why = "";
    if (st.on) {
      const to = none(st.target_pct) ? "the target" : `${fmt(st.target_pct, 1)} %`;
      why = st.at_target ? `at ${to}: resting, then sleep`
        : st.holds_charge ? `discharging to ${to}` : st.holds_discharge ? `charging to ${to}` : `going to ${to}`;
    }
    setText("storage-why", why);
    setText("self-draw", none(s.self_draw_a) ? "--"
      : `${fmt(s.self_draw_a * 1000, 1)} mA, ${fmt(s.self_drawn_ah, 3)} Ah counted since boot`);
  }

  function renderCells(s) {
    const box = $("cells");
    const cells = s.cells || [];
    if (state.cellCount !== cells.length) {
      box.textContent = "";
      for (const c of cells) {
        const col = el("div", "cell");
        col.append(el("span", "v", "--"));
        const bar = el("div", "bar");
        bar.append(el("div", "fill"), el("div", "mark"));
        col.append(bar, el("span", "n", `cell ${c.n}`), el("span", "d", ""), el("span", "badge hide", "balancing"));
        box.append(col);
      }
      if (!cells.length) box.append(el("p", "muted", "No cells configured: set the pack up with `bmsctl setup`."));
      box.classList.toggle("many", cells.length > 8);  // up to 16 cells: they wrap rather than overflow
      state.cellCount = cells.length;
    }
    const lim = s.limits || {};
    const vmin = Math.min(...cells.map((c) => c.v)), vmax = Math.max(...cells.map((c) => c.v));
    setText("lim-uv", lim.cell_uv_v ? `${fmt(lim.cell_uv_v, 2)} V` : "--");
    setText("lim-ov", lim.cell_ov_v ? `${fmt(lim.cell_ov_v, 2)} V` : "--");
    // without the trip limits (over MQTT) the bars span the cells' own range
    const known = !!(lim.cell_uv_v && lim.cell_ov_v);
    $("span-limits").hidden = !known;
    $("span-cells").hidden = known;
    const lo = known ? lim.cell_uv_v : vmin - 0.1, hi = known ? lim.cell_ov_v : vmax + 0.1;
    const pos = (v) => (hi > lo ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 0.5);
    cells.forEach((c, i) => {
      const col = box.children[i];
      col.classList.toggle("balancing", c.balancing);
      // many cells: the figure alone fits a narrow bar (the unit in its tooltip)
      const v = col.querySelector(".v");
      v.textContent = fmt(c.v, 3) + (cells.length > 8 ? "" : " V");
      v.title = fmt(c.v, 3) + " V";
      col.querySelector(".fill").style.height = `${(pos(c.v) * 100).toFixed(1)}%`;
      const mark = col.querySelector(".mark");
      mark.hidden = !lim.bal_start_v;
      if (lim.bal_start_v) {
        mark.style.bottom = `${(pos(lim.bal_start_v) * 100).toFixed(1)}%`;
        mark.title = `balancing starts above ${fmt(lim.bal_start_v, 3)} V`;
      }
      const dmv = Math.round((c.v - vmin) * 1000);
      col.querySelector(".d").textContent = cells.length < 2 || vmax === vmin ? "" : c.v === vmax ? `highest, +${dmv} mV`
        : c.v === vmin ? "lowest" : `+${dmv} mV`;
      col.querySelector(".badge").classList.toggle("hide", !c.balancing);
    });
    const bal = cells.filter((c) => c.balancing).map((c) => c.n);
    setText("cells-note", cells.length ? `${cells.length} in series · spread ${Math.round((s.cell_spread_v || 0) * 1000)} mV`
      + (bal.length ? ` · balancing cell${bal.length > 1 ? "s" : ""} ${bal.join(", ")}` : "") : "");
  }

  function renderAlerts(s) {
    const ul = $("alerts");
    ul.textContent = "";
    const alerts = s.alerts || [];
    if (!alerts.length) {
      ul.append(el("li", "ok", "All clear: no protection or warning is active"));
    }
    for (const a of alerts) {
      const li = el("li", a.kind);
      const what = a.kind === "warning" ? "Warning" : a.kind === "latched" ? "Latched" : "Protection";
      li.append(el("b", "", `${what}: ${a.text}`), el("span", "", `${a.detail} (${a.name})`));
      ul.append(li);
    }
    const temps = $("temps");
    temps.textContent = "";
    (s.temps_c || []).forEach((t, i) => {
      const li = el("li", none(t) ? "none" : "");
      const bar = el("span", "t-bar");
      const fill = el("span", "t-fill");
      fill.style.display = "block";
      fill.style.width = none(t) ? "0%" : `${Math.max(0, Math.min(100, ((t + 20) / 80) * 100)).toFixed(0)}%`;
      bar.append(fill);
      li.append(el("span", "t-name", `TS${i + 1}`), bar, el("span", "t-val", none(t) ? "not fitted" : `${fmt(t, 1)} °C`));
      temps.append(li);
    });
  }

  function renderFoot(s) {
    const pw = s.power || {};
    const parts = [];
    if (!none(s.meas_count)) parts.push(`measurement #${s.meas_count}`);
    parts.push(`uptime ${hms(s.uptime_s)}`);
    if (s.chemistry) parts.push(`${s.chemistry.toUpperCase()} ${fmt(s.full_capacity_ah, 1)} Ah`);
    if (pw.reset_cause) parts.push(`this boot: ${pw.reset_cause}`);
    setText("foot", parts.join(" · "));
    setText("where", s.where ? `on ${s.where}` : "");
  }

  function renderState(s) {
    renderLink(s);
    if (s.pack_v === undefined) return;
    renderCharge(s);
    renderPower(s);
    renderStates(s);
    renderCells(s);
    renderAlerts(s);
    renderFoot(s);
  }

  // -- events ------------------------------------------------------------------
  async function loadEvents() {
    const r = await api("/api/events");
    if (!r.events) return;
    const tb = $("events");
    tb.textContent = "";
    for (const e of r.events.slice(0, 200)) {
      const cls = e.kind || "";
      const tr = el("tr", cls);
      tr.append(el("td", "", String(e.seq)), el("td", "", none(e.boot) ? "--" : String(e.boot)), el("td", "", e.uptime),
        el("td", "", e.text));
      tb.append(tr);
    }
    if (!r.events.length) {
      const tr = el("tr");
      tr.append(el("td", "muted", "—"), el("td"), el("td"), el("td", "muted", "no events read yet"));
      tb.append(tr);
    }
  }

  // -- chart ---------------------------------------------------------------------
  function ticks(lo, hi, n) {
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return { out, step };
  }

  function drawPanel(ctx, x0, y0, w, h, t0, t1, key, color, title, unit) {
    const pts = state.samples.filter((s) => s.t >= t0 - state.period && !none(s[key]));
    let lo = Math.min(0, ...pts.map((p) => p[key])), hi = Math.max(0, ...pts.map((p) => p[key]));
    if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.12;
    lo = lo < 0 ? lo - pad : lo;
    hi = hi > 0 ? hi + pad : hi;
    const { out, step } = ticks(lo, hi, 4);
    const X = (t) => x0 + ((t - t0) / (t1 - t0)) * w;
    const Y = (v) => y0 + h - ((v - lo) / (hi - lo)) * h;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const dec = Number.isInteger(step) ? 0 : Number.isInteger(Math.round(step * 1e6) / 1e5) ? 1 : 2;
    for (const v of out) {
      ctx.strokeStyle = v === 0 ? "#94a3b8" : "#eef1f5";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x0, Math.round(Y(v)) + 0.5);
      ctx.lineTo(x0 + w, Math.round(Y(v)) + 0.5);
      ctx.stroke();
      ctx.fillStyle = "#8a94a6";
      ctx.fillText(v.toFixed(dec), x0 - 6, Y(v));
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillStyle = color;
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.fillText(`${title} (${unit})`, x0 + 6, y0 + 2);
    if (!pts.length) return;
    const gap = Math.max(3 * state.period, 3);
    // area to zero, then the line; a gap in the readings breaks both
    const runs = [];
    let run = [];
    for (const p of pts) {
      if (run.length && p.t - run[run.length - 1].t > gap) { runs.push(run); run = []; }
      run.push(p);
    }
    if (run.length) runs.push(run);
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, y0, w, h);
    ctx.clip();
    for (const r of runs) {
      ctx.beginPath();
      ctx.moveTo(X(r[0].t), Y(0));
      for (const p of r) ctx.lineTo(X(p.t), Y(p[key]));
      ctx.lineTo(X(r[r.length - 1].t), Y(0));
      ctx.closePath();
      ctx.fillStyle = color + "22";
      ctx.fill();
      ctx.beginPath();
      r.forEach((p, i) => (i ? ctx.lineTo(X(p.t), Y(p[key])) : ctx.moveTo(X(p.t), Y(p[key]))));
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
    }
    ctx.restore();
    const last = pts[pts.length - 1];
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(X(last.t), Y(last[key]), 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }

  function drawChart() {
    const c = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const s = state.samples;
    const t1 = s.length ? s[s.length - 1].t : Date.now() / 1000;
    // the window fills with data from the first reading on
    const first = s.length ? s[0].t : t1;
    const t0 = Math.min(t1 - 30, Math.max(t1 - state.span, first));
    const left = 48, right = 12, axis = 22, gapY = 18;
    const ph = (h - axis - gapY) / 2;
    drawPanel(ctx, left, 0, w - left - right, ph, t0, t1, "a", "#2563eb", "Current", "A");
    drawPanel(ctx, left, ph + gapY, w - left - right, ph, t0, t1, "w", "#ea580c", "Power", "W");
    ctx.fillStyle = "#8a94a6";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "bottom";
    const n = Math.max(2, Math.min(6, Math.floor((w - left) / 110)));
    for (let i = 0; i <= n; i++) {
      const t = t0 + ((t1 - t0) * i) / n;
      ctx.textAlign = i === 0 ? "left" : i === n ? "right" : "center";
      ctx.fillText(clock(t), left + ((w - left - right) * i) / n, h);
    }
  }

  // -- polling ---------------------------------------------------------------------
  async function loadHistory() {
    const url = state.lastT === null ? "/api/history" : `/api/history?since=${state.lastT}`;
    const r = await api(url);
    if (!r.samples) return;
    state.interval = r.interval || state.interval;
    state.period = r.period || state.interval;
    if (r.samples.length) {
      state.samples.push(...r.samples);
      state.lastT = state.samples[state.samples.length - 1].t;
      const keep = state.lastT - 3700;
      if (state.samples[0].t < keep) state.samples = state.samples.filter((p) => p.t >= keep);
    }
  }

  async function tick() {
    try {
      const s = await api("/api/state");
      renderState(s);
      if (!s.offline) {
        await loadHistory();
        drawChart();
        if (s.ok && s.event_seq !== state.eventSeq) {
          state.eventSeq = s.event_seq;
          await loadEvents();
          if (state.configLoaded) loadConfig();
        }
        if (s.config_state) renderConfigState(s.config_state);
      }
    } finally {
      setTimeout(tick, Math.max(250, state.interval * 1000));
    }
  }

  // -- settings ----------------------------------------------------------------------
  function renderConfigState(cs) {
    const parts = [];
    if (cs.pin_lockout) parts.push("Unlocking is refused for a minute after 5 wrong PINs.");
    else if (cs.unlocked) parts.push(`Writes are open for ${cs.unlock_left_s} s more (no PIN needed until then).`);
    else parts.push("Writes are locked: the PIN opens them for this change and they lock again after it.");
    if (cs.restart_pending) parts.push("A stored pack change waits for a restart.");
    if (!cs.configured) parts.push("The BMS runs unconfigured (FETs off): set it up with `bmsctl setup`.");
    setText("cfg-state", parts.join(" "));
  }

  function findParam(name) {
    const n = name.trim().toLowerCase();
    const sel = state.params.find((p) => p.name === state.selected);
    return state.params.find((p) => p.name === n) || (sel && sel.short === n ? sel : null)
      || state.params.find((p) => p.short === n);
  }

  function hintFor(name) {
    const p = findParam(name);
    if (!p) {
      setText("cf-hint", name.trim().toLowerCase() === "cells" ? "cells=N: the default wiring for N cells in series (takes effect at a restart)"
        : "Pick a parameter from the list, or click one in the table.");
      return;
    }
    const eng = p.short !== p.name && name.trim().toLowerCase() === p.short;
    const unit = eng ? p.unit : p.raw_unit;
    const need = eng && p.ambiguous ? ` Give it with its unit (${unit}): ${p.short} also names another parameter.`
      : unit ? ` Give it in ${unit}${eng ? "" : " (raw)"}.` : "";
    setText("cf-hint", `${p.description}. Now ${p.text}; range ${p.range}.${need}`
      + (p.restart ? " Takes effect at a restart." : ""));
    $("cf-value").placeholder = p.name === "pin" ? "the new PIN" : eng ? p.text.replace(" ", "") : String(p.raw);
  }

  async function loadConfig() {
    const r = await api("/api/config");
    if (!r.parameters) {
      showResult("cf-result", false, r.error || "cannot read the parameters");
      return;
    }
    state.params = r.parameters;
    state.configLoaded = true;
    renderConfigState(r.state);
    const dl = $("param-names");
    if (!dl.children.length) {
      const names = new Set();
      for (const p of r.parameters) { names.add(p.short); names.add(p.name); }
      names.add("cells");
      for (const n of names) { const o = el("option"); o.value = n; dl.append(o); }
    }
    renderParams();
    hintFor($("cf-name").value);
  }

  function renderParams() {
    const q = $("filter").value.trim().toLowerCase();
    const tb = $("params");
    tb.textContent = "";
    const sel = findParam($("cf-name").value);
    for (const p of state.params) {
      if (q && !(p.name.includes(q) || p.description.toLowerCase().includes(q))) continue;
      const tr = el("tr", sel && sel.name === p.name ? "sel" : "");
      const td = el("td");
      td.append(el("b", "", p.short));
      if (p.restart) td.append(el("span", "tag", "restart"));
      if (p.short !== p.name) td.append(el("small", "", p.name));
      tr.append(td, el("td", "", p.text), el("td", "", p.range), el("td", "", p.description));
      tr.addEventListener("click", () => {
        state.selected = p.name;
        $("cf-name").value = p.short;
        hintFor(p.short);
        $("cf-value").value = "";
        $("cf-value").focus();
        renderParams();
      });
      tb.append(tr);
    }
  }

  function showResult(id, ok, text) {
    const e = $(id);
    e.hidden = false;
    e.className = "result " + (ok ? "ok" : "err");
    e.textContent = text;
  }

  async function submitConfig(ev) {
    ev.preventDefault();
    const name = $("cf-name").value.trim(), value = $("cf-value").value.trim(), pin = $("cf-pin").value.trim();
    const btn = $("cf-apply");
    btn.disabled = true;
    showResult("cf-result", true, `writing ${name}=${value} ...`);
    const r = await api("/api/config", { set: { [name]: value }, pin: pin || null });
    btn.disabled = false;
    if (!r.ok) {
      showResult("cf-result", false, `Not written: ${r.error}`);
      return;
    }
    const lines = [];
    if (!r.changed.length && !r.pin_changed) lines.push(r.message || "Nothing to change: the BMS already holds this value.");
    else lines.push(`Written (${r.requests} write request${r.requests === 1 ? "" : "s"}) and read back:`);
    for (const c of r.changed) lines.push(`  ${c.name}: ${c.old_text} → ${c.new_text}`);
    if (r.pin_changed) lines.push("  pin changed (it is never read back): use the new PIN from now on");
    for (const [k, v] of Object.entries(r.mismatch || {})) lines.push(`Warning: ${k} reads back ${v}, not what was written`);
    if (r.restart_pending) lines.push(`Restart needed: ${(r.pending || []).join(", ") || "the stored pack settings"} take effect when the BMS restarts (button below).`);
    showResult("cf-result", true, lines.join("\n"));
    $("cf-value").value = "";
    loadConfig();
  }

  async function restart() {
    $("restart-confirm").hidden = true;
    $("restart").hidden = false;
    $("restart").disabled = true;
    showResult("restart-result", true, "restarting the BMS and waiting for it to answer ...");
    const r = await api("/api/restart", { pin: $("cf-pin").value.trim() || null });
    $("restart").disabled = false;
    if (!r.ok) {
      showResult("restart-result", false, `Not restarted: ${r.error}`);
      return;
    }
    showResult("restart-result", true, `Restarted: the BMS answered again after ${r.seconds} s`
      + (r.configured ? " and runs configured." : " but runs UNCONFIGURED (FETs off): see the event log."));
    loadConfig();
  }

  async function storage(on) {
    for (const id of ["storage-on", "storage-off"]) $(id).disabled = true;
    const r = await api("/api/storage", { on, pin: $("cf-pin").value.trim() || null });
    for (const id of ["storage-on", "storage-off"]) $(id).disabled = false;
    if (!r.ok) {
      showResult("storage-result", false, `Not changed: ${r.error}`);
      return;
    }
    showResult("storage-result", true, r.storage
      ? `Storage mode on: the pack goes to ${fmt(r.storage_soc_pct, 1)} %, then rests and sleeps.`
      : "Storage mode off: the pack is in use again.");
    loadConfig();
  }

  // -- tabs and wiring ---------------------------------------------------------------
  function showTab(name) {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    $("tab-live").hidden = name !== "live";
    $("tab-settings").hidden = name !== "settings";
    if (name === "settings") loadConfig();
    else drawChart();
  }

  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => { history.replaceState(null, "", "#" + b.dataset.tab); showTab(b.dataset.tab); });
  }
  for (const b of document.querySelectorAll("#range button")) {
    b.addEventListener("click", () => {
      state.span = Number(b.dataset.span);
      for (const o of document.querySelectorAll("#range button")) o.classList.toggle("active", o === b);
      drawChart();
    });
  }
  $("config-form").addEventListener("submit", submitConfig);
  $("cf-name").addEventListener("input", () => { hintFor($("cf-name").value); renderParams(); });
  $("filter").addEventListener("input", renderParams);
  $("restart").addEventListener("click", () => { $("restart").hidden = true; $("restart-confirm").hidden = false; });
  $("restart-no").addEventListener("click", () => { $("restart-confirm").hidden = true; $("restart").hidden = false; });
  $("restart-yes").addEventListener("click", restart);
  $("storage-on").addEventListener("click", () => storage(true));
  $("storage-off").addEventListener("click", () => storage(false));
  window.addEventListener("resize", drawChart);

  showTab(location.hash === "#settings" ? "settings" : "live");
  tick();
})();
