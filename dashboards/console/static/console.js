// boltwatch console: draws a device's charts with uPlot and refreshes them every data-poll seconds.
// A file, not an inline script: the Content-Security-Policy is default-src 'self'.
//
// A page holds one #charts element (data-series: the series URL, data-poll: seconds) with one or
// more .chart elements: data-left / data-right name the fields on each axis, data-lines adds the
// bolt's settled/80/70/30 % lines, data-forecast its forecast line, data-zones background bands
// (ISO 10816-3 zone edges). One request per poll feeds every chart of the page. A #spectrum
// element (data-spectrum: its URL) draws the newest waveform's Welch spectrum.
(function () {
  "use strict";
  const colours = ["#1565c0", "#7b1fa2", "#2e7d32", "#c62828", "#ef6c00", "#00838f", "#5d4037", "#ad1457"];
  const lineColours = { "settled": "#2e7d32", "80 %": "#f9a825", "70 %": "#ef6c00", "30 %": "#c62828" };
  const labels = { preload_kn: "preload (raw)", preload_comp_kn: "preload (compensated)", temp_c: "temperature" };
  const bandColours = { info: "rgba(46,125,50,.10)", warning: "rgba(249,168,37,.18)", major: "rgba(239,108,0,.18)", critical: "rgba(198,40,40,.18)" };
  const zoneColours = ["rgba(46,125,50,.10)", "rgba(249,168,37,.12)", "rgba(239,108,0,.12)", "rgba(198,40,40,.12)"];

  // ISO zones as horizontal bands (under the series), events as dashed vertical lines, alert
  // episodes as bands.
  function marksPlugin(el) {
    return {
      hooks: {
        drawClear: [(u) => {
          const zones = (el.dataset.zones || "").split(",").filter((z) => z !== "").map(Number);
          if (!zones.length) return;
          const ctx = u.ctx;
          const edges = [u.scales.y.min, ...zones, u.scales.y.max];
          ctx.save();
          for (let i = 0; i + 1 < edges.length; i++) {
            const lo = Math.max(edges[i], u.scales.y.min);
            const hi = Math.min(edges[i + 1], u.scales.y.max);
            if (hi <= lo) continue;
            const y0 = u.valToPos(hi, "y", true);
            const y1 = u.valToPos(lo, "y", true);
            ctx.fillStyle = zoneColours[Math.min(i, zoneColours.length - 1)];
            ctx.fillRect(u.bbox.left, y0, u.bbox.width, y1 - y0);
            ctx.fillStyle = "#555";
            ctx.font = "11px sans-serif";
            ctx.fillText("ABCD"[i] || "", u.bbox.left + 4, y0 + 12);
          }
          ctx.restore();
        }],
        draw: [(u) => {
          const marks = el.marks || { events: [], episodes: [] };
          const ctx = u.ctx;
          const top = u.bbox.top;
          const height = u.bbox.height;
          const xmin = u.scales.x.min;
          const xmax = u.scales.x.max;
          ctx.save();
          marks.episodes.forEach((e) => {
            const from = Math.max(e.from, xmin);
            const to = e.to === null ? xmax : Math.min(e.to, xmax);
            if (to <= from) return;
            const x0 = u.valToPos(from, "x", true);
            const x1 = u.valToPos(to, "x", true);
            ctx.fillStyle = bandColours[e.severity] || "rgba(0,0,0,.06)";
            ctx.fillRect(x0, top, x1 - x0, height);
          });
          ctx.strokeStyle = "#555";
          ctx.fillStyle = "#333";
          ctx.setLineDash([3, 3]);
          ctx.font = "11px sans-serif";
          marks.events.forEach((e) => {
            if (e.t < xmin || e.t > xmax) return;
            const x = u.valToPos(e.t, "x", true);
            ctx.beginPath();
            ctx.moveTo(x, top);
            ctx.lineTo(x, top + height);
            ctx.stroke();
            ctx.fillText(e.type, x + 3, top + 12);
          });
          ctx.restore();
        }],
      },
    };
  }

  function names(el, side) {
    return (el.dataset[side] || "").split(",").filter((n) => n !== "");
  }

  // The chart's columns: x, its fields, its lines, its forecast (x extended ahead of the data).
  function columns(el, data) {
    const shown = [...names(el, "left"), ...names(el, "right")].filter((n) => data.fields[n] !== undefined);
    const lines = el.dataset.lines ? Object.entries(data.lines || {}) : [];
    const f = el.dataset.forecast ? data.forecast : null;
    let t = data.t.slice();
    const cols = shown.map((n) => data.fields[n].slice());
    const lineCols = lines.map(() => t.map(() => null));
    let fc = t.map(() => null);
    if (f) {
      const last = t.length ? t[t.length - 1] : -Infinity;
      const ahead = f.t[0] > last ? [f.t[0], f.t[1]] : [f.t[1]];
      if (f.t[0] <= last && fc.length) fc[fc.length - 1] = f.kn[0];
      t = t.concat(ahead);
      cols.forEach((c) => ahead.forEach(() => c.push(null)));
      fc = fc.concat(ahead.length === 2 ? f.kn : [f.kn[1]]);
    }
    lines.forEach(([, v], i) => { lineCols[i] = t.map(() => v); });
    const out = [t, ...cols, ...lineCols];
    if (el.dataset.forecast) out.push(f ? fc : t.map(() => null));
    return { shown: shown, lines: lines.map(([k]) => k), cols: out };
  }

  function build(el, data, c) {
    const right = names(el, "right");
    const units = data.units || {};
    const series = [{}];
    c.shown.forEach((name, i) => {
      const onRight = right.includes(name);
      series.push({ label: labels[name] || name, stroke: colours[i % colours.length], width: 1.5, scale: onRight ? "r" : "y", spanGaps: false });
    });
    c.lines.forEach((label) => {
      series.push({ label: label, stroke: lineColours[label] || "#999", dash: [6, 4], width: 1, scale: "y" });
    });
    if (el.dataset.forecast) {
      series.push({ label: "forecast", stroke: "#c62828", dash: [2, 4], width: 2, scale: "y", spanGaps: true });
    }
    const left = names(el, "left");
    const axes = [{}, { scale: "y", label: units[left[0]] || "" }];
    if (right.length) axes.push({ scale: "r", side: 1, label: units[right[0]] || "", grid: { show: false } });
    const height = Number(el.dataset.height || "300");
    const opts = { width: el.clientWidth || 900, height: height, series: series, axes: axes, scales: { x: { time: true } }, plugins: [marksPlugin(el)] };
    el.textContent = "";
    return new uPlot(opts, c.cols, el);
  }

  function latest(data) {
    const table = document.getElementById("latest");
    if (!table) return;
    const rows = Object.entries(data.fields).map(([name, values]) => {
      for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return [name, values[i]];
      return [name, null];
    }).filter(([, v]) => v !== null);
    const body = document.createElement("tbody");
    rows.forEach(([name, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = name;
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) + " " + ((data.units || {})[name] || "");
      tr.append(th, td);
      body.append(tr);
    });
    table.replaceChildren(body);
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(String(response.status));
    return response.json();
  }

  async function startCharts(host) {
    const charts = Array.from(host.querySelectorAll(".chart[data-left]")).map((el) => ({ el: el, plot: null, shape: "" }));
    async function refresh() {
      let data;
      try {
        data = await getJson(host.dataset.series);
      } catch (err) {
        charts.forEach((ch) => { if (ch.plot === null) ch.el.textContent = "chart: " + err.message; });
        return;
      }
      charts.forEach((ch) => {
        const el = ch.el;
        el.marks = { events: data.events || [], episodes: data.episodes || [] };
        el.dataset.events = String(el.marks.events.length);
        el.dataset.episodes = String(el.marks.episodes.length);
        el.dataset.source = data.source;
        el.dataset.points = String(data.t.length);
        const c = columns(el, data);
        const key = c.shown.join(",") + "|" + c.lines.join(",");
        if (ch.plot === null || key !== ch.shape) {
          if (ch.plot !== null) ch.plot.destroy();
          ch.plot = build(el, data, c);
          ch.shape = key;
        } else {
          ch.plot.setData(c.cols);
        }
        if (el.dataset.forecast) el.dataset.forecastShown = data.forecast ? "1" : "0";
      });
      const text = document.getElementById("forecast");
      if (text && data.forecast) text.textContent = data.forecast.text;
      latest(data);
      host.dataset.loaded = String(Number(host.dataset.loaded || "0") + 1);
    }
    await refresh();
    const every = Number(host.dataset.poll || "2") * 1000;
    setInterval(() => { refresh().catch(() => {}); }, every);
  }

  async function startSpectrum(el) {
    let plot = null;
    const info = document.getElementById("spectrum-info");
    async function refresh() {
      const data = await getJson(el.dataset.spectrum);
      const sp = data.spectrum;
      if (sp === null) {
        el.dataset.bins = "0";
        if (info) info.textContent = "No waveform received yet.";
        return;
      }
      const when = new Date(sp.t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
      if (info) {
        const vib = sp.vib_rms_mms === null ? "" : `, vibration ${sp.vib_rms_mms.toFixed(2)} mm/s RMS (zone ${sp.zone})`;
        info.textContent = `Newest waveform: ${when}, ${sp.samples} samples at ${sp.fs_hz} Hz, ${sp.rms.toFixed(2)} m/s² RMS${vib}.`;
      }
      // Log axis: no zeros (the DC bin of a mean-removed waveform is ~0).
      const f = [];
      const p = [];
      sp.f.forEach((v, i) => { if (v > 0 && sp.psd[i] > 0) { f.push(v); p.push(sp.psd[i]); } });
      el.dataset.bins = String(f.length);
      if (plot === null) {
        el.textContent = "";
        plot = new uPlot({
          width: el.clientWidth || 900, height: 260,
          series: [{ label: "Hz" }, { label: "PSD", stroke: "#1565c0", width: 1 }],
          axes: [{ label: "Hz" }, { label: "(m/s²)²/Hz" }],
          scales: { x: { time: false }, y: { distr: 3 } },
        }, [f, p], el);
      } else {
        plot.setData([f, p]);
      }
    }
    await refresh();
    const every = Number(el.dataset.poll || "5") * 1000;
    setInterval(() => { refresh().catch(() => {}); }, every);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!window.uPlot) return;
    const host = document.getElementById("charts");
    if (host) startCharts(host).catch((err) => { host.dataset.error = String(err); });
    const spectrum = document.getElementById("spectrum");
    if (spectrum) startSpectrum(spectrum).catch((err) => { spectrum.textContent = "spectrum: " + err; });
  });
})();
