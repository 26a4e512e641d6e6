// custos console behaviour: charts from data-chart attributes, deadline
// clocks, live-stream status. Loaded as a file; the CSP forbids inline code.
(function () {
  "use strict";

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function colour(cls, i) {
    var bad = ["--bad", "--warn", "--info", "--accent", "--muted"];
    if (cls === "ok") return cssVar("--ok");
    if (cls === "info") return cssVar("--info");
    return cssVar(bad[i % bad.length]);
  }

  var numFmt = new Intl.NumberFormat("en");

  function total(vals) {
    var t = 0;
    (vals || []).forEach(function (v) { if (typeof v === "number") t += v; });
    return t;
  }

  // Legends read without hovering: away from the plot each series shows its
  // total over the chart and the time column the chart's range; under the
  // cursor they show the values at that time, as uPlot does.
  function legendValue(sum) {
    return function (u, v, si, idx) {
      if (idx == null) return numFmt.format(sum) + " total";
      return v == null ? "–" : numFmt.format(v);
    };
  }

  var fmtTime = uPlotFmt("{YYYY}-{MM}-{DD} {HH}:{mm}Z");

  function uPlotFmt(f) {
    return typeof uPlot === "undefined" ? function (d) { return d.toISOString(); } : uPlot.fmtDate(f);
  }

  function utc(ts) { return typeof uPlot === "undefined" ? new Date(ts * 1e3) : uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }

  function rangeLabel(x) {
    var a = fmtTime(utc(x[0])), b = fmtTime(utc(x[x.length - 1]));
    return a === b ? a : a + " – " + b;
  }

  function drawChart(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") return;
    var d;
    try { d = JSON.parse(el.dataset.chart); } catch (e) { return; }
    el.dataset.drawn = "1";
    if (!d.x || d.x.length === 0) {
      el.textContent = "No data yet.";
      el.classList.add("muted");
      return;
    }
    var fg = cssVar("--fg"), grid = cssVar("--line");
    var axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    var opts = {
      width: Math.max(300, el.clientWidth),
      height: 220,
      series: [{}],
      axes: [Object.assign({}, axis), Object.assign({ label: d.unit || "" }, axis)],
      scales: { x: d.x.length === 1 ? { time: true, range: [d.x[0] - 3600, d.x[0] + 3600] } : { time: true } },
      tzDate: utc,
      legend: { live: true },
    };
    var label = rangeLabel(d.x);
    opts.series[0] = {
      label: "UTC",
      value: function (u, v, si, idx) { return idx == null || v == null ? label : fmtTime(utc(v)); },
    };
    var data = [d.x];
    var badIndex = 0;
    (d.series || []).forEach(function (s) {
      var c = colour(s.class, s.class === "bad" ? badIndex++ : 0);
      opts.series.push({ label: s.label, stroke: c, width: 2, points: { show: d.x.length < 3 }, value: legendValue(total(s.values)) });
      data.push(s.values);
    });
    new uPlot(opts, data, el);
  }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }

  function tickClocks() {
    var now = Date.now();
    document.querySelectorAll(".clock[data-due]").forEach(function (el) {
      var due = Date.parse(el.dataset.due);
      var out = el.querySelector("[data-remaining]");
      if (isNaN(due) || !out) return;
      var ms = due - now, over = ms < 0;
      ms = Math.abs(ms);
      var h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
      var t = h + "h " + pad(m) + "m " + pad(s) + "s";
      out.textContent = over ? "overdue by " + t : t + " left";
      el.classList.toggle("overdue", over);
    });
  }

  function init(root) {
    (root || document).querySelectorAll(".chart[data-chart]").forEach(drawChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    tickClocks();
    setInterval(tickClocks, 1000);
    document.body.addEventListener("htmx:load", function (e) { init(e.detail.elt); });
    var live = document.getElementById("live-status");
    if (live) {
      document.body.addEventListener("htmx:sseOpen", function () { live.classList.remove("down"); live.textContent = "live"; });
      document.body.addEventListener("htmx:sseError", function () { live.classList.add("down"); live.textContent = "reconnecting"; });
    }
  });
})();
