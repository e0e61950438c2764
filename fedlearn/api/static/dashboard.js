// fedlearn operations dashboard: polls GET /v1/dashboard/data and keeps a rolling time series
// in the page (the server keeps no history). The admin token comes from ?token= (then removed
// from the address bar and kept for this tab only) or from the form; "off" means auth is off.
"use strict";

(() => {
  const EVERY_MS = Math.max(500, Number(new URLSearchParams(location.search).get("every")) || 2000);
  const KEEP_S = 30 * 60; // the rolling window the charts show
  const TOKEN_KEY = "fedlearn.dashboard.token";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];

  /** What the test harness (and a curious operator) can read: window.fedlearnDashboard. */
  const state = { polls: 0, errors: 0, lastError: null, last: null, series: null, charts: {} };
  window.fedlearnDashboard = state;

  const $ = (id) => document.getElementById(id);

  function takeToken() {
    const params = new URLSearchParams(location.search);
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : ""));
    }
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  // --- formatting ---------------------------------------------------------------------------

  const num = (x, digits = 0) =>
    x === null || x === undefined || Number.isNaN(x) ? "–"
      : Number(x).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const seconds = (s) => (s === null || s === undefined ? "–" : s < 1 ? `${num(s * 1000, 0)} ms` : `${num(s, 2)} s`);
  const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function fillTable(id, rows, toCells) {
    const body = $(id).tBodies[0];
    const fresh = document.createDocumentFragment();
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const td of toCells(row)) tr.appendChild(td);
      fresh.appendChild(tr);
    }
    body.replaceChildren(fresh);
  }

  // --- the rolling series -------------------------------------------------------------------

  function newSeries(nShards) {
    return {
      nShards,
      t: [],
      aucClone: [], aucBase: [], aucCloneFirst: [], aucBaseFirst: [],
      rate: [], p50: [], p99: [],
      lag: Array.from({ length: nShards }, () => []),
    };
  }

  function push(series, data) {
    const p = data.progressive || {};
    const auc = (events, model) => (p[events] && p[events][model] ? p[events][model].auc : null);
    series.t.push(data.at);
    series.aucClone.push(auc("all", "clone"));
    series.aucBase.push(auc("all", "base"));
    series.aucCloneFirst.push(auc("first", "clone"));
    series.aucBaseFirst.push(auc("first", "base"));
    series.rate.push(data.totals.rate);
    series.p50.push(data.freshness.p50);
    series.p99.push(data.freshness.p99);
    for (const shard of data.shards) series.lag[shard.shard].push(shard.lag_seconds);
    let drop = 0;
    while (drop < series.t.length && series.t[drop] < data.at - KEEP_S) drop += 1;
    if (drop) {
      for (const key of Object.keys(series)) {
        if (Array.isArray(series[key]) && key !== "lag") series[key].splice(0, drop);
      }
      for (const one of series.lag) one.splice(0, drop);
    }
  }

  // --- charts -------------------------------------------------------------------------------

  function width(el) {
    return Math.max(280, el.clientWidth - 8);
  }

  function line(label, color, extra = {}) {
    return { label, stroke: color, width: 2, spanGaps: false, ...extra };
  }

  /** A uPlot plugin: a dashed red line at the time of every drift event in view. */
  function driftMarkers() {
    const draw = (u) => {
      const events = state.drift || [];
      const [lo, hi] = [u.scales.x.min, u.scales.x.max];
      const { ctx } = u;
      const { top, height } = u.bbox;
      ctx.save();
      ctx.strokeStyle = "#d62728";
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
      for (const e of events) {
        if (lo === undefined || e.at < lo || e.at > hi) continue;
        const x = Math.round(u.valToPos(e.at, "x", true));
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
      }
      ctx.restore();
    };
    return { hooks: { draw: [draw] } };
  }

  function makeChart(id, series, opts = {}) {
    const el = $(id);
    const chart = new uPlot(
      {
        width: width(el),
        height: 220,
        series: [{}, ...series],
        scales: { x: { time: true }, ...(opts.scales || {}) },
        axes: [{}, { size: 60, ...(opts.yAxis || {}) }],
        legend: { live: true },
        plugins: [driftMarkers()],
      },
      [[], ...series.map(() => [])],
      el,
    );
    state.charts[id] = chart;
    return chart;
  }

  function buildCharts(nShards) {
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
    const auc = { scales: { y: { range: (u, lo, hi) => [Math.min(0.5, lo ?? 0.5), Math.max(0.8, hi ?? 0.8)] } } };
    makeChart("chart-auc", [
      line("clones", "#1f77b4"),
      line("base", "#d62728"),
      line("clones, first events", "#1f77b4", { dash: [6, 4] }),
      line("base, first events", "#d62728", { dash: [6, 4] }),
    ], auc);
    makeChart("chart-rate", [line("events/s", "#2ca02c", { fill: "rgba(44,160,44,0.08)" })]);
    makeChart("chart-fresh", [line("p50", "#1f77b4"), line("p99", "#ff7f0e")]);
    makeChart("chart-lag", Array.from({ length: nShards }, (_, i) => line(`shard ${i}`, COLORS[i % COLORS.length], { width: 1.5 })));
    const kinds = [["round", "#1f77b4"], ["monthly", "#d62728"], ["trained", "#7f7f7f"]];
    makeChart(
      "chart-bases",
      kinds.map(([kind, color]) => ({
        label: kind, stroke: color, fill: color, paths: () => null, points: { show: true, size: 9, fill: color },
      })),
      {
        yAxis: {
          size: 70,
          values: (u, ticks) => ticks.map((i) => (Number.isInteger(i) && state.versions && state.versions[i] ? `v ${state.versions[i]}` : "")),
        },
      },
    );
  }

  function drawCharts(series, data) {
    state.drift = data.drift || []; // before setData: the markers' draw hook reads it
    const c = state.charts;
    c["chart-auc"].setData([series.t, series.aucClone, series.aucBase, series.aucCloneFirst, series.aucBaseFirst]);
    c["chart-rate"].setData([series.t, series.rate]);
    c["chart-fresh"].setData([series.t, series.p50, series.p99]);
    c["chart-lag"].setData([series.t, ...series.lag]);
    const versions = data.bases.versions;
    state.versions = versions.map((v) => v.version);
    const x = versions.map((v) => v.created_at);
    const only = (kind) => versions.map((v, i) => (v.kind === kind ? i : null));
    c["chart-bases"].setData([x, only("round"), only("monthly"), only("trained")]);
  }

  // --- tiles and tables ---------------------------------------------------------------------

  function describeActions(actions) {
    const parts = Object.entries(actions || {}).map(([name, what]) =>
      typeof what === "object" && what !== null
        ? `${name}: ${what.outcome ?? "?"}${what.round ? ` (${what.round})` : ""}`
        : `${name}: ${what}`);
    return parts.length ? parts.join("; ") : "none";
  }

  const percent = (x) => (x === null || x === undefined ? "–" : `${num(100 * x, 1)} %`);

  /** The exploration tile and table: the share of shown items rank explored, all policies. */
  function drawExploration(rows) {
    const shown = rows.reduce((sum, r) => sum + r.shown, 0);
    const explored = rows.reduce((sum, r) => sum + r.explored, 0);
    $("kpi-explore").textContent = shown ? `${percent(explored / shown)} of ${num(shown)}` : "–";
    fillTable("exploration", rows, (r) => [
      cell(r.policy), cell(num(r.shown), "num"), cell(num(r.explored), "num"), cell(percent(r.rate), "num"),
    ]);
  }

  /** The served-vs-greedy tile and table, as the beat task last estimated them. */
  function drawOffPolicy(ope) {
    const rate = (e) => (e && e.value !== null ? num(e.value, 3) : "–");
    const figures = ope ? [["served", ope.served], ["greedy", ope.greedy]] : [];
    $("kpi-ope").textContent = ope && !ope.error ? `${rate(ope.served)} / ${rate(ope.greedy)}` : "–";
    fillTable("ope", figures.filter(([, e]) => e), ([name, e]) => [
      cell(name), cell(rate(e), "num"),
      cell(e.low === null || e.high === null ? "–" : `${num(e.low, 3)} – ${num(e.high, 3)}`, "num"),
      cell(num(e.n), "num"), cell(num(e.users), "num"),
    ]);
    $("ope-note").textContent = !ope
      ? "not estimated yet (the beat task runs every FEDLEARN_OPE_DASHBOARD_EVERY_S)"
      : ope.error
        ? `no estimate: ${ope.error}`
        : `estimated at ${clock(ope.computed_at)} on the newest ${num(ope.last)} top-slot events` +
          (ope.greedy ? "" : "; greedy: the logged policies do not tell what it would have shown");
  }

  function drawNumbers(data) {
    const p = data.progressive.all || {};
    const auc = (m) => (p[m] && p[m].auc !== null ? num(p[m].auc, 3) : "–");
    $("kpi-rate").textContent = num(data.totals.rate, 0);
    $("kpi-applied").textContent = num(data.totals.applied, 0);
    $("kpi-fresh").textContent = `${seconds(data.freshness.p50)} / ${seconds(data.freshness.p99)}`;
    $("kpi-auc").textContent = `${auc("clone")} / ${auc("base")}`;
    $("kpi-gate").textContent = `${num(data.totals.served_base)} of ${num(data.totals.cached_users)}`;
    $("kpi-base").textContent = data.bases.current ?? "none";
    drawExploration(data.exploration || []);
    drawOffPolicy(data.off_policy ?? null);
    fillTable("rounds", data.rounds, (r) => [
      cell(r.id), cell(r.status, `status-${r.status}`), cell(r.trigger), cell(clock(r.finished_at)),
      cell(seconds(r.duration_s), "num"), cell(num(r.users), "num"), cell(num(r.events), "num"),
      cell(r.clipped_fraction === null ? "–" : `${num(100 * r.clipped_fraction, 1)} %`, "num"),
      cell(r.version ?? "–"), cell(r.strategy ?? "–"), cell(r.error ?? r.shadow ?? "", "note"),
    ]);
    fillTable("drift", data.drift || [], (d) => [
      cell(clock(d.at)), cell(d.signal), cell(d.shard === null ? "all" : String(d.shard)),
      cell(num(d.before, 4), "num"), cell(num(d.after, 4), "num"), cell(num(d.events), "num"),
      cell(d.trainer), cell(describeActions(d.actions), "note"),
    ]);
    fillTable("shards", data.shards, (s) => [
      cell(String(s.shard)), cell(num(s.users), "num"), cell(num(s.length), "num"), cell(num(s.pending), "num"),
      cell(num(s.lag_events), "num"), cell(seconds(s.lag_seconds), "num"), cell(s.holder ? s.holder.split("@")[0] : "none"),
    ]);
    fillTable("trainers", data.trainers, (t) => [
      cell(t.name), cell(t.shards.join(" ")), cell(num(t.rate, 0), "num"), cell(num(t.applied), "num"),
      cell(num(t.cached_users), "num"), cell(num(t.served_base), "num"), cell(`${num(t.age_s, 0)} s ago`),
    ]);
  }

  // --- polling ------------------------------------------------------------------------------

  function showLogin(message) {
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("status").textContent = "sign in";
  }

  async function poll(token) {
    const headers = token && token !== "off" ? { Authorization: `Bearer ${token}` } : {};
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    try {
      const response = await fetch("v1/dashboard/data", { headers, signal: abort.signal, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        const problem = await response.json().catch(() => ({}));
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(problem.detail || `the server answered ${response.status}`);
        return false;
      }
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = await response.json();
      if (!state.series || state.series.nShards !== data.n_shards) {
        state.series = newSeries(data.n_shards);
        buildCharts(data.n_shards);
      }
      push(state.series, data);
      $("login").hidden = true;
      $("board").hidden = false;
      drawNumbers(data);
      drawCharts(state.series, data);
      state.polls += 1;
      state.last = data;
      const status = $("status");
      status.className = "";
      status.textContent = `updated ${clock(data.at)} · ${data.trainers.length} trainer(s) · ${data.n_shards} shards · every ${EVERY_MS / 1000} s`;
      return true;
    } catch (error) {
      state.errors += 1;
      state.lastError = String(error);
      const status = $("status");
      status.className = "error";
      status.textContent = `no data since ${clock(state.last && state.last.at)}: ${error.message || error}; retrying`;
      return true;
    } finally {
      clearTimeout(timer);
    }
  }

  let session = 0; // a new sign-in stops the previous polling loop

  async function loop(token, mine = ++session) {
    if (mine !== session) return;
    if (await poll(token)) setTimeout(() => loop(token, mine), EVERY_MS);
  }

  function start() {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      loop(token);
    });
    window.addEventListener("resize", () => {
      for (const [id, chart] of Object.entries(state.charts)) chart.setSize({ width: width($(id)), height: 220 });
    });
    const token = takeToken();
    if (token) loop(token);
    else showLogin("");
  }

  start();
})();
