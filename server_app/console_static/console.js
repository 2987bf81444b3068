// The live console: polls console.json and renders it. Text only (textContent, never
// innerHTML): error messages and names come from config files and the network.
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  const interval = Math.max(200, Number(params.get("interval") || 1000));
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"];
  const forecastCharts = new Map(); // "tenant/model" -> {plot, box}
  let rateChart = null;
  let rateKeys = "";

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "number") return digits === undefined ? String(value) : value.toFixed(digits);
    return String(value);
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }

  function when(epoch) {
    return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "never";
  }

  function renderWorker(w) {
    const card = el("div", { class: "worker", "data-worker": w.worker });
    card.appendChild(el("h3", {}, w.worker));
    if (w.unreachable) {
      card.appendChild(el("p", { class: "bad", "data-field": "unreachable" }, "unreachable: " + w.unreachable));
      return card;
    }
    const dl = el("dl");
    const row = (label, value, field, cls) => {
      dl.appendChild(el("dt", {}, label));
      const dd = el("dd", { "data-field": field }, value);
      if (cls) dd.className = cls;
      dl.appendChild(dd);
    };
    row("uptime", duration(w.uptime_s), "uptime");
    row("ready", w.ready ? "yes" : "no: " + w.ready_detail, "ready", w.ready ? "good" : "bad");
    row("broker", (w.broker.connected ? "connected to " : "DISCONNECTED from ") + w.broker.host + ":" + w.broker.port,
      "broker", w.broker.connected ? "good" : "bad");
    row("queue depth", w.queue_depth, "queue_depth");
    for (const [name, model] of Object.entries(w.models || {})) {
      row("model " + name, "default v" + fmt(model.default) + ", loaded " + model.loaded.map((v) => "v" + v).join(", "),
        "model-" + name);
    }
    const r = w.reload || {};
    row("last reload", r.last_at ? when(r.last_at) + " (" + r.last_result + ", " + r.count + " total)" : "none",
      "reload");
    if (r.config_error) row("config rejected", r.config_error, "config_error", "bad");
    for (const [key, why] of Object.entries(w.failures || {})) row("failed " + key, why, "failure", "bad");
    for (const [key, why] of Object.entries(w.missing || {})) row("not serving " + key, why, "missing", "bad");
    card.appendChild(dl);
    return card;
  }

  function renderTraffic(doc) {
    const body = document.querySelector("#traffic tbody");
    const rows = [];
    for (const w of doc.workers) {
      for (const [tenant, models] of Object.entries(w.tenants)) {
        for (const [model, s] of Object.entries(models)) {
          const tr = el("tr", { "data-worker": w.worker, "data-tenant": tenant, "data-model": model });
          const cell = (field, value, cls) => {
            const td = el("td", { "data-field": field }, value);
            if (cls) td.className = cls;
            tr.appendChild(td);
          };
          cell("worker", w.worker, "name");
          cell("tenant", tenant, "name");
          cell("model", model, "name");
          cell("version", fmt(s.version));
          cell("answers", s.answers);
          cell("rate_per_s", fmt(s.rate_per_s, 1));
          cell("ok", s.ok);
          const errors = Object.entries(s.errors).map(([code, n]) => code + " " + n).join(", ");
          cell("errors", errors || "0", s.error_count ? "name bad" : "name");
          cell("p50_ms", fmt(s.p50_ms, 2));
          cell("p99_ms", fmt(s.p99_ms, 2));
          cell("shadow", s.shadow ? "v" + s.shadow.version + " skill " + fmt(s.shadow.skill, 2) : "–");
          cell("canary", s.canary ? "v" + s.canary.version + " (" + Math.round(100 * s.canary.fraction) + " %) skill "
            + fmt(s.canary.skill, 2) : "–");
          cell("skill", fmt(s.skill, 2) + (s.alarm ? " ALARM" : ""));
          rows.push(tr);
        }
      }
    }
    body.replaceChildren(...rows);
  }

  function chartWidth() {
    return Math.min(560, Math.max(320, window.innerWidth - 60));
  }

  function renderRates(doc) {
    // One line per tenant/model, summed over workers.
    const sums = new Map();
    let xs = null;
    for (const w of doc.workers) {
      for (const [tenant, models] of Object.entries(w.tenants)) {
        for (const [model, s] of Object.entries(models)) {
          if (!s.rate_history.length) continue;
          const key = tenant + "/" + model;
          const ys = s.rate_history.map((p) => p[1]);
          if (!xs) xs = s.rate_history.map((p) => p[0]);
          const prev = sums.get(key);
          sums.set(key, prev ? prev.map((v, i) => v + (ys[i] || 0)) : ys);
        }
      }
    }
    const keys = Array.from(sums.keys()).sort();
    const box = document.getElementById("rate-chart");
    if (!xs || !keys.length) return;
    const data = [xs, ...keys.map((k) => sums.get(k))];
    if (rateChart && rateKeys === keys.join(",")) {
      rateChart.setData(data);
      return;
    }
    if (rateChart) rateChart.destroy();
    rateKeys = keys.join(",");
    rateChart = new uPlot({
      width: Math.min(1100, window.innerWidth - 60), height: 220,
      series: [{}, ...keys.map((k, i) => ({ label: k, stroke: palette[i % palette.length], width: 2 }))],
      axes: [{}, { label: "answers/s" }],
    }, data, box);
  }

  function renderForecasts(doc) {
    const container = document.getElementById("forecast-charts");
    const series = new Map();
    for (const w of doc.workers) {
      for (const [tenant, models] of Object.entries(w.tenants)) {
        for (const [model, s] of Object.entries(models)) {
          const key = tenant + "/" + model;
          const entry = series.get(key) || { forecasts: [], actuals: [] };
          entry.forecasts.push(...s.forecasts);
          entry.actuals.push(...s.actuals);
          series.set(key, entry);
        }
      }
    }
    for (const key of Array.from(series.keys()).sort()) {
      const { forecasts, actuals } = series.get(key);
      if (!forecasts.length && !actuals.length) continue;
      // Merge onto one time axis: forecasts and actuals at their own times, gaps elsewhere.
      const points = new Map();
      for (const [t, v] of forecasts) points.set(t, [v, (points.get(t) || [null, null])[1]]);
      for (const [t, v] of actuals) points.set(t, [(points.get(t) || [null, null])[0], v]);
      const xs = Array.from(points.keys()).sort((a, b) => a - b);
      const data = [xs, xs.map((t) => points.get(t)[0]), xs.map((t) => points.get(t)[1])];
      let chart = forecastCharts.get(key);
      if (!chart) {
        const box = el("div", { class: "chart-box", "data-chart": key });
        box.appendChild(el("h3", {}, key));
        container.appendChild(box);
        const plot = new uPlot({
          width: chartWidth(), height: 200,
          series: [{}, { label: "forecast", stroke: palette[0], width: 2, spanGaps: true },
            { label: "actual", stroke: palette[2], width: 2, spanGaps: true }],
        }, data, box);
        chart = { plot, box };
        forecastCharts.set(key, chart);
      } else {
        chart.plot.setData(data);
      }
      chart.box.setAttribute("data-points", String(forecasts.length));
    }
  }

  function render(doc) {
    document.getElementById("worker-count").textContent = String(doc.workers.length);
    document.getElementById("aggregation").textContent = doc.aggregation;
    document.getElementById("workers").replaceChildren(...doc.workers.map(renderWorker));
    renderTraffic(doc);
    renderRates(doc);
    renderForecasts(doc);
    document.getElementById("updated").textContent = when(doc.generated_at);
    document.body.setAttribute("data-generated-at", String(doc.generated_at));
  }

  async function poll() {
    const status = document.getElementById("status");
    try {
      const response = await fetch("console.json", { cache: "no-store" });
      if (!response.ok) throw new Error("console.json answered " + response.status);
      render(await response.json());
      status.textContent = "live";
      status.className = "good";
    } catch (error) {
      status.textContent = "cannot reach the worker (" + error.message + ")";
      status.className = "bad";
    }
    window.setTimeout(poll, interval);
  }

  poll();
})();
