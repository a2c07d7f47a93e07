// trackd live dashboard: asks once for an API key (kept in sessionStorage, this tab only), then
// polls the per-second API and the fleet API (every pod's backlog, and whether PostgreSQL answers)
// every second and redraws four uPlot charts and the pods' table.
(() => {
  "use strict";
  const WINDOW_S = 900;
  const KEY = "trackd.apiKey";
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat("en");
  const backlog = { t: [], rows: [] };
  let charts = null;
  let timer = null;
  let inFlight = false;

  function chart(el, series, yLabel) {
    const opts = {
      width: el.clientWidth || 600,
      height: 220,
      scales: { x: { time: true } },
      axes: [
        { stroke: "#8b98a5", grid: { stroke: "#222b35" } },
        { stroke: "#8b98a5", grid: { stroke: "#222b35" }, label: yLabel, size: 60 },
      ],
      series: [{}, ...series],
    };
    return new uPlot(opts, [[], ...series.map(() => [])], el);
  }

  function makeCharts() {
    return {
      opens: chart($("chart-opens"), [
        { label: "people", stroke: "#4cc2ff", width: 2, fill: "rgba(76,194,255,0.12)" },
        { label: "machines", stroke: "#8b98a5", width: 1 },
      ], "opens/s"),
      clicks: chart($("chart-clicks"), [
        { label: "people", stroke: "#5ad07a", width: 2, fill: "rgba(90,208,122,0.12)" },
        { label: "machines", stroke: "#8b98a5", width: 1 },
      ], "clicks/s"),
      lag: chart($("chart-lag"), [{ label: "max lag", stroke: "#ffb020", width: 2 }], "ms"),
      backlog: chart($("chart-backlog"), [{ label: "rows", stroke: "#ff6b6b", width: 2 }], "events"),
    };
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
    if (response.status === 401) {
      const error = new Error("unauthorized");
      error.unauthorized = true;
      throw error;
    }
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.json();
  }

  function sum(points, field) {
    return points.reduce((total, p) => total + p[field], 0);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "0 s";
    return seconds < 10 ? seconds.toFixed(2) + " s" : Math.round(seconds) + " s";
  }

  async function tick() {
    if (inFlight) return;
    inFlight = true;
    try {
      const until = Math.floor(Date.now() / 1000) - 1; // the current second is still filling
      const params = new URLSearchParams({ since: String(until - WINDOW_S + 1), until: String(until) });
      const campaign = $("campaign").value.trim();
      if (campaign) params.set("campaign_id", campaign);
      // Settled apart: with PostgreSQL down the per-second API fails (503) while /v1/fleet still
      // answers, from this pod's own numbers, and says so.
      const [series, fleet] = await Promise.allSettled([api("/v1/interactions/per-second?" + params), api("/v1/fleet")]);
      for (const r of [series, fleet]) if (r.status === "rejected" && r.reason.unauthorized) throw r.reason;
      if (fleet.status === "rejected") throw fleet.reason;
      renderFleet(fleet.value);
      if (fleet.value.database === "unreachable") {
        databaseDown(fleet.value);
        return;
      }
      databaseUp();
      if (series.status === "rejected") throw series.reason;
      renderSeries(series.value.series);
      $("state").textContent = "live";
      $("state").className = "state ok";
    } catch (error) {
      if (error.unauthorized) {
        sessionStorage.removeItem(KEY);
        stop();
        askForKey("That key was refused.");
        return;
      }
      $("state").textContent = "no data: " + error.message;
      $("state").className = "state bad";
    } finally {
      inFlight = false;
    }
  }

  function databaseDown(fleet) {
    const since = fleet.unreachable_since ? new Date(fleet.unreachable_since * 1000) : new Date();
    const minutes = Math.floor((Date.now() - since.getTime()) / 60000);
    $("db-down").textContent = "PostgreSQL unreachable since " + since.toLocaleTimeString() +
      (minutes >= 1 ? " (" + minutes + " min)" : "") +
      "; events are safe in the pods' journals and are written once it answers again." +
      " Opens and clicks cannot be counted until then; the backlog shown is this pod's only.";
    $("db-down").hidden = false;
    document.querySelector("main").classList.add("down");
    for (const id of ["opens-now", "clicks-now", "opens-total", "clicks-total", "machine-share", "lag-now"]) {
      $(id).textContent = "–";
    }
    $("state").textContent = "PostgreSQL unreachable";
    $("state").className = "state bad";
  }

  function databaseUp() {
    $("db-down").hidden = true;
    document.querySelector("main").classList.remove("down");
  }

  function renderSeries(points) {
    const t = points.map((p) => p.second);
    charts.opens.setData([t, points.map((p) => p.opens), points.map((p) => p.machine_opens)]);
    charts.clicks.setData([t, points.map((p) => p.clicks), points.map((p) => p.machine_clicks)]);
    charts.lag.setData([t, points.map((p) => p.max_lag_ms)]);
    // What each chart plots, summed, for people and for tests to check against what was sent.
    $("chart-opens").dataset.total = sum(points, "opens");
    $("chart-clicks").dataset.total = sum(points, "clicks");

    const last = points.slice(-5);
    const opens = sum(points, "opens"), clicks = sum(points, "clicks");
    const machine = sum(points, "machine_opens") + sum(points, "machine_clicks");
    $("opens-now").textContent = (sum(last, "opens") / Math.max(1, last.length)).toFixed(1);
    $("clicks-now").textContent = (sum(last, "clicks") / Math.max(1, last.length)).toFixed(1);
    $("opens-total").textContent = fmt.format(opens);
    $("clicks-total").textContent = fmt.format(clicks);
    $("machine-share").textContent = opens + clicks + machine ? Math.round((100 * machine) / (opens + clicks + machine)) + " %" : "–";
    $("lag-now").textContent = fmt.format(Math.max(0, ...points.slice(-10).map((p) => p.max_lag_ms))) + " ms";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
  }

  function renderFleet(fleet) {
    const now = Math.floor(Date.now() / 1000);
    backlog.t.push(now);
    backlog.rows.push(fleet.backlog.rows);
    while (backlog.t.length && backlog.t[0] < now - WINDOW_S) { backlog.t.shift(); backlog.rows.shift(); }
    charts.backlog.setData([backlog.t, backlog.rows]);
    const down = fleet.database === "unreachable";
    $("backlog-now").textContent = fmt.format(fleet.backlog.rows) + " rows";
    $("oldest-now").textContent = duration(fleet.backlog.oldest_pending_age_s);
    $("stale-after").textContent = String(fleet.stale_after_s);

    // Rows made with textContent only: a pod's name is data, never markup.
    const body = $("pods").tBodies[0];
    const rows = fleet.pods.map((pod) => {
      const tr = document.createElement("tr");
      tr.dataset.instance = pod.instance;
      tr.dataset.backlog = String(pod.backlog_rows);
      tr.className = pod.reporting ? "reporting" : "stale";
      cell(tr, pod.instance + (pod.this ? " (this page)" : ""));
      cell(tr, pod.writer_state);
      cell(tr, fmt.format(pod.backlog_rows));
      cell(tr, fmt.format(pod.backlog_bytes) + " B");
      cell(tr, duration(pod.oldest_pending_age_s));
      cell(tr, pod.last_commit_at ? new Date(pod.last_commit_at * 1000).toLocaleTimeString() : "–");
      const beat = pod.this ? "live" : pod.reporting ? Math.round(pod.age_s) + " s ago" : "not reporting (" + Math.round(pod.age_s) + " s)";
      cell(tr, beat, "heartbeat");
      return tr;
    });
    if (down && rows.length === 1) {
      const tr = document.createElement("tr");
      cell(tr, "other pods: unknown while PostgreSQL is unreachable");
      tr.firstChild.colSpan = 7;
      tr.className = "stale";
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("pods").dataset.reporting = String(fleet.backlog.pods_reporting);
    const self = fleet.pods.find((p) => p.this);
    $("updated").textContent = "Last update " + new Date().toLocaleTimeString() + " · this pod's writer " + (self ? self.writer_state : "?");
  }

  function start() {
    if (!charts) charts = makeCharts();
    stop();
    tick();
    timer = setInterval(tick, 1000);
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  function askForKey(message) {
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("login").showModal();
    $("api-key").focus();
  }

  $("login-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    $("api-key").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    stop();
    askForKey("");
  });
  $("campaign").addEventListener("change", () => { backlog.t.length = 0; backlog.rows.length = 0; tick(); });
  $("filter").addEventListener("submit", (event) => { event.preventDefault(); tick(); });
  window.addEventListener("resize", () => {
    if (!charts) return;
    for (const [name, c] of Object.entries(charts)) {
      c.setSize({ width: $("chart-" + name).clientWidth, height: 220 });
    }
  });

  if (sessionStorage.getItem(KEY)) start(); else askForKey("");
})();
