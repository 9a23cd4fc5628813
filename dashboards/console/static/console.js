// boltwatch console: draws a device's chart with uPlot and refreshes it every data-poll seconds.
// A file, not an inline script: the Content-Security-Policy is default-src 'self'.
(function () {
  "use strict";
  const colours = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#ad1457"];
  const lineColours = { "settled": "#2e7d32", "80 %": "#f9a825", "70 %": "#ef6c00", "30 %": "#c62828" };

  const bandColours = { info: "rgba(46,125,50,.10)", warning: "rgba(249,168,37,.18)", major: "rgba(239,108,0,.18)", critical: "rgba(198,40,40,.18)" };

  // Events (tightening, battery swap...) as dashed vertical lines, alert episodes as bands.
  function marksPlugin(el) {
    return {
      hooks: {
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

  function build(el, data) {
    const names = Object.keys(data.fields).filter((n) => data.fields[n].some((v) => v !== null));
    const preferred = data.kind === "cbolt" ? ["preload_kn", "temp_c"] : names;
    const shown = preferred.filter((n) => names.includes(n));
    const series = [{}];
    const columns = [data.t];
    shown.forEach((name, i) => {
      const second = data.kind === "cbolt" && name === "temp_c";
      series.push({ label: name, stroke: colours[i % colours.length], width: 1.5, scale: second ? "temp" : "y", spanGaps: false });
      columns.push(data.fields[name]);
    });
    Object.entries(data.lines || {}).forEach(([label, value]) => {
      series.push({ label: label, stroke: lineColours[label] || "#999", dash: [6, 4], width: 1, scale: "y" });
      columns.push(data.t.map(() => value));
    });
    const axes = [{}, { scale: "y", label: data.kind === "cbolt" ? "kN" : "" }];
    if (data.kind === "cbolt") {
      axes.push({ scale: "temp", side: 1, label: "°C", grid: { show: false } });
    }
    const opts = { width: el.clientWidth || 900, height: 360, series: series, axes: axes, scales: { x: { time: true } }, plugins: [marksPlugin(el)] };
    el.textContent = "";
    el.dataset.points = String(data.t.length);
    el.dataset.source = data.source;
    return new uPlot(opts, columns, el);
  }

  async function load(el) {
    const response = await fetch(el.dataset.series, { credentials: "same-origin" });
    if (!response.ok) {
      el.textContent = "chart: " + response.status;
      return null;
    }
    return response.json();
  }

  async function start(el) {
    let plot = null;
    let shape = "";
    async function refresh() {
      const data = await load(el);
      if (data === null) return;
      el.marks = { events: data.events || [], episodes: data.episodes || [] };
      el.dataset.events = String(el.marks.events.length);
      el.dataset.episodes = String(el.marks.episodes.length);
      const key = Object.keys(data.fields).join(",") + "|" + Object.keys(data.lines || {}).join(",");
      if (plot === null || key !== shape) {
        if (plot !== null) plot.destroy();
        plot = build(el, data);
        shape = key;
      } else {
        const columns = [data.t];
        plot.series.slice(1).forEach((s) => {
          if (data.fields[s.label] !== undefined) columns.push(data.fields[s.label]);
          else columns.push(data.t.map(() => data.lines[s.label]));
        });
        plot.setData(columns);
        el.dataset.points = String(data.t.length);
      }
    }
    await refresh();
    const every = Number(el.dataset.poll || "2") * 1000;
    setInterval(() => { refresh().catch(() => {}); }, every);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const el = document.getElementById("chart");
    if (el && window.uPlot) start(el).catch((err) => { el.textContent = "chart: " + err; });
  });
})();
