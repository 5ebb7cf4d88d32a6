// The dashboard page: reads its settings from the json_script block, fetches the /v1 API
// with the session cookie, and draws with Chart.js from our own static files. Each
// section sets data-loaded when its figures are on screen (tests and screenshots wait
// for it). No inline script or style anywhere: the page runs under a strict CSP.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const P = window.P1Periods;
  const $ = (id) => document.getElementById(id);

  const COLOURS = {
    import: "#1f5fa8",
    importLight: "#9dbbe3",
    export: "#2e9d5b",
    rest: "#e3e7ee",
    warning: "#d9480f",
    warningLight: "#f7b48f",
    incomplete: "#f0b429",
    marker: "#333333",
  };

  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  Chart.defaults.animation.duration = 250;
  Chart.defaults.maintainAspectRatio = false;

  // ---- fetching ---------------------------------------------------------------------

  async function getJSON(path, params) {
    const url = new URL(path, window.location.origin);
    url.searchParams.set("device_id", config.device_id);
    for (const [name, value] of Object.entries(params || {})) url.searchParams.set(name, value);
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      let detail = response.status + " " + response.statusText;
      try {
        const problem = await response.json();
        detail = problem.detail || problem.title || detail;
      } catch (ignored) {
        // not JSON: keep the status line
      }
      throw new Error(detail);
    }
    return response.json();
  }

  const failures = new Map();

  function report(section, error) {
    if (error) failures.set(section, section + ": " + error.message);
    else failures.delete(section);
    const status = $("status");
    status.textContent = Array.from(failures.values()).join(" · ");
    status.hidden = failures.size === 0;
  }

  const kw = (value, digits) => (value === null || value === undefined ? "–" : value.toFixed(digits ?? 2));
  const watts = (value) => (value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en"));

  // ---- live power and the quarter gauge ---------------------------------------------

  // Draws the month's peak as a tick across the gauge's arc.
  const thresholdMarker = {
    id: "thresholdMarker",
    afterDatasetsDraw(chart) {
      const fraction = chart.$thresholdFraction;
      const arc = chart.getDatasetMeta(0).data[0];
      if (fraction === undefined || !arc) return;
      const { x, y, innerRadius, outerRadius } = arc.getProps(["x", "y", "innerRadius", "outerRadius"], true);
      const angle = Math.PI + Math.PI * fraction;
      const ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = COLOURS.marker;
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.moveTo(x + (innerRadius - 4) * Math.cos(angle), y + (innerRadius - 4) * Math.sin(angle));
      ctx.lineTo(x + (outerRadius + 4) * Math.cos(angle), y + (outerRadius + 4) * Math.sin(angle));
      ctx.stroke();
      ctx.restore();
    },
  };

  const gauge = new Chart($("gauge-chart"), {
    type: "doughnut",
    data: {
      labels: ["Average so far", "Projected", ""],
      datasets: [{ data: [0, 0, 1], backgroundColor: [COLOURS.import, COLOURS.importLight, COLOURS.rest], borderWidth: 0 }],
    },
    options: {
      rotation: -90,
      circumference: 180,
      cutout: "68%",
      layout: { padding: 6 },
      plugins: { legend: { display: false }, tooltip: { enabled: false } },
    },
    plugins: [thresholdMarker],
  });

  function drawGauge(quarter) {
    const average = Math.max(quarter.average_so_far_kw || 0, 0);
    const projected = Math.max(quarter.projected_kw || 0, 0);
    const threshold = quarter.threshold_kw;
    const scale = Math.max(threshold * 1.25, projected * 1.05, average * 1.05);
    const low = Math.min(average, projected);
    const warn = quarter.exceeds_threshold;
    const dataset = gauge.data.datasets[0];
    dataset.data = [low, Math.max(projected, average) - low, scale - Math.max(projected, average)];
    dataset.backgroundColor = warn
      ? [COLOURS.warning, COLOURS.warningLight, COLOURS.rest]
      : [COLOURS.import, COLOURS.importLight, COLOURS.rest];
    gauge.$thresholdFraction = threshold / scale;
    gauge.update();
    $("gauge").classList.toggle("warning", warn);
    $("quarter-warning").hidden = !warn;
    $("quarter-projected").textContent = kw(projected);
    $("quarter-average").textContent = kw(average);
    $("quarter-threshold").textContent = kw(threshold);
    $("quarter-headroom").textContent = watts(quarter.headroom_w);
    $("quarter-broken").hidden = !quarter.certainly_exceeds_threshold;
    const target = config.target_kw;
    for (const id of ["quarter-target-label", "quarter-target-value"]) $(id).hidden = target === null;
    if (target !== null) $("quarter-target").textContent = kw(target);
    $("quarter-target-warning").hidden = target === null || projected <= target || warn;
    $("quarter-span").textContent = P.moment(quarter.start).slice(-5) + "–" + quarter.end.slice(11, 16);
    $("quarter-began").textContent = P.moment(quarter.start).slice(-5);
  }

  function drawLive(answer) {
    const latest = answer.latest;
    const power = $("live-power");
    if (!latest) {
      power.textContent = "–";
      $("live-age").textContent = "no readings yet";
      return;
    }
    power.textContent = watts(latest.power_w);
    power.dataset.watts = String(latest.power_w);
    $("live-direction").textContent = latest.power_w < 0 ? "exporting" : "importing";
    $("live-age").textContent = answer.age_s === null ? "" : "· reading " + Math.max(0, Math.round(answer.age_s)) + " s old";
    const phases = $("live-phases");
    phases.replaceChildren();
    ["power_l1_w", "power_l2_w", "power_l3_w"].forEach((name, i) => {
      if (latest[name] === null || latest[name] === undefined) return;
      const dt = document.createElement("dt");
      dt.textContent = "L" + (i + 1);
      const dd = document.createElement("dd");
      dd.textContent = watts(latest[name]) + " W";
      phases.append(dt, dd);
    });
    if (answer.quarter) drawGauge(answer.quarter);
    if (answer.month && answer.month.month !== config.month) {
      config.month = answer.month.month; // a new month began while the page was open
      loadMonth();
      loadMonthTable();
    }
  }

  async function pollLive() {
    try {
      drawLive(await getJSON(config.api.realtime));
      report("live power", null);
      $("live-title").closest("section").dataset.loaded = String(Date.now());
    } catch (error) {
      report("live power", error);
    }
    window.setTimeout(pollLive, config.live_refresh_ms);
  }

  // ---- this month -------------------------------------------------------------------

  async function loadMonth() {
    try {
      const month = await getJSON(config.api.month + config.month);
      $("month-name").textContent = P.label(P.period("month", month.month + "-01"));
      $("month-peak").textContent = month.peak ? kw(month.peak.kw) : "–";
      $("month-peak-when").textContent = month.peak ? P.moment(month.peak.quarter_start) : "no quarter yet";
      $("month-peak-incomplete").hidden = !(month.peak && month.peak.incomplete);
      $("month-billed").textContent = kw(month.billed_peak_kw);
      $("rolling-average").textContent = kw(month.rolling_average.kw);
      const cost = month.estimated_cost;
      const yearly = $("yearly-cost");
      yearly.textContent = cost ? costText(cost) : noCostText(month.tariff);
      yearly.title = cost
        ? "at € " + cost.price_eur_per_kw_year + " per kW per year excl. VAT (" + cost.price_source + ")"
        : "";
      drawBreaks(month.register_breaks || []);
      report("month", null);
      $("month-title").closest("section").dataset.loaded = month.month;
    } catch (error) {
      report("month", error);
    }
  }

  function costText(cost) {
    const vat = cost.yearly_eur_incl_vat === null ? "" :
      " (€ " + cost.yearly_eur_incl_vat.toFixed(2) + " incl. VAT)";
    return "€ " + cost.yearly_eur.toFixed(2) + " a year excl. VAT" + vat + " · € " +
      cost.monthly_eur.toFixed(2) + " a month";
  }

  function noCostText(tariff) {
    if (!tariff) return "choose the device's network area (or set a price) in the admin";
    if (tariff.status === "no-capacity-tariff") return "no capacity tariff in this region";
    if (tariff.status === "unpriced") return "no published " + tariff.year + " price for this area";
    return "–";
  }

  // A meter swap (or an edge pointed at another meter) shows where it is: its register
  // step is not energy, so the month's figures leave it out and say so.
  function drawBreaks(breaks) {
    const section = $("month-title").closest("section");
    let notice = $("month-breaks");
    if (!breaks.length) {
      if (notice) notice.remove();
      return;
    }
    if (!notice) {
      notice = document.createElement("ul");
      notice.id = "month-breaks";
      notice.className = "warning-text";
      section.appendChild(notice);
    }
    notice.replaceChildren(
      ...breaks.map((b) => {
        const item = document.createElement("li");
        const what = b.kind === "went-down" ? "Meter change" : "Register jump (another meter?)";
        item.textContent =
          what + " at " + P.moment(b.ts) + ": import register " + b.previous_import_kwh.toFixed(3) +
          " → " + b.import_kwh.toFixed(3) + " kWh; the step is not counted as energy.";
        return item;
      }),
    );
    section.dataset.breaks = String(breaks.length);
  }

  // ---- the day's quarters -----------------------------------------------------------

  // The peak of the shown day's month as a dashed line: which quarters set or neared it.
  const monthPeakLine = {
    id: "monthPeakLine",
    afterDatasetsDraw(chart) {
      const peak = monthPeaks.get(dayState.day.slice(0, 7));
      if (!peak) return;
      const { left, right } = chart.chartArea;
      const y = chart.scales.y.getPixelForValue(peak);
      const ctx = chart.ctx;
      ctx.save();
      ctx.strokeStyle = COLOURS.warning;
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(right, y);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = COLOURS.warning;
      ctx.font = "12px " + Chart.defaults.font.family;
      ctx.textAlign = "right";
      ctx.fillText("month's peak " + peak.toFixed(2) + " kW", right - 4, y - 4);
      ctx.restore();
    },
  };
  const monthPeaks = new Map();
  const dayState = { day: config.day, incomplete: [] };

  const dayChart = new Chart($("day-chart"), {
    type: "bar",
    data: { labels: [], datasets: [{ label: "kW", data: [], backgroundColor: [], borderColor: [], borderWidth: 0, barPercentage: 1, categoryPercentage: 0.9 }] },
    options: {
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { afterLabel: (item) => (dayState.incomplete[item.dataIndex] ? "incomplete quarter" : "") } },
      },
      scales: {
        x: { ticks: { autoSkip: true, maxRotation: 0, autoSkipPadding: 12 }, grid: { display: false } },
        y: {
          beginAtZero: true,
          title: { display: true, text: "kW" },
          // Keep the month's peak line inside the chart.
          afterDataLimits: (scale) => {
            const peak = monthPeaks.get(dayState.day.slice(0, 7));
            if (peak && scale.max < peak * 1.1) scale.max = peak * 1.1;
          },
        },
      },
    },
    plugins: [monthPeakLine],
  });

  async function loadDay(day) {
    dayState.day = day;
    $("day-label").textContent = P.dayLabel(day);
    $("day-next").disabled = day >= config.today;
    try {
      const answer = await getJSON(config.api.quarters, { date: day });
      if (dayState.day !== day) return; // a later click won
      const quarters = answer.quarters;
      dayState.incomplete = quarters.map((q) => q.incomplete);
      const dataset = dayChart.data.datasets[0];
      dayChart.data.labels = quarters.map((q) => q.start.slice(11, 16));
      dataset.data = quarters.map((q) => q.kw);
      dataset.backgroundColor = quarters.map((q) => (q.incomplete ? COLOURS.incomplete : COLOURS.import));
      dayChart.update();
      const incomplete = quarters.filter((q) => q.incomplete && q.kw !== null).length;
      const empty = quarters.filter((q) => q.kw === null).length;
      $("day-count").textContent =
        quarters.length + " quarters: " + incomplete + " incomplete, " + empty + " without data";
      const section = $("day");
      section.dataset.quarters = String(quarters.length);
      section.dataset.loaded = day;
      report("day", null);
    } catch (error) {
      report("day", error);
    }
  }

  $("day-prev").addEventListener("click", () => loadDay(P.addDays(dayState.day, -1)));
  $("day-next").addEventListener("click", () => loadDay(P.addDays(dayState.day, 1)));
  $("day-today").addEventListener("click", () => loadDay(config.today));

  // ---- history ----------------------------------------------------------------------

  const historyChart = new Chart($("history-chart"), {
    type: "bar",
    data: {
      labels: [],
      datasets: [
        { label: "Imported kWh", data: [], backgroundColor: COLOURS.import },
        { label: "Exported kWh", data: [], backgroundColor: COLOURS.export },
      ],
    },
    options: {
      plugins: { legend: { position: "bottom" } },
      scales: {
        x: { ticks: { autoSkip: true, maxRotation: 0, autoSkipPadding: 8 }, grid: { display: false } },
        y: { beginAtZero: true, title: { display: true, text: "kWh" } },
      },
    },
  });
  // ?day= opens the history on that day too, so both charts show the day asked for.
  let history = P.period("day", config.day);

  async function loadHistory(current) {
    history = current;
    $("history-label").textContent = P.label(current);
    $("history-next").disabled = current.end > config.today;
    document.querySelectorAll("#history .tabs button").forEach((button) => {
      button.classList.toggle("active", button.dataset.period === current.kind);
      button.setAttribute("aria-pressed", String(button.dataset.period === current.kind));
    });
    try {
      const answer = await getJSON(config.api.series, {
        interval: current.interval,
        start: current.start,
        end: current.end,
      });
      if (history !== current) return;
      const buckets = answer.buckets;
      historyChart.data.labels = buckets.map((b) => P.bucketLabel(current.kind, b.start));
      historyChart.data.datasets[0].data = buckets.map((b) => b.import_kwh);
      historyChart.data.datasets[1].data = buckets.map((b) => b.export_kwh);
      historyChart.update();
      const sum = (name) => buckets.reduce((total, b) => total + (b[name] || 0), 0);
      // A meter without export registers answers null export.
      const exported = buckets.some((b) => b.export_kwh !== null)
        ? "exported " + sum("export_kwh").toFixed(1) + " kWh"
        : "no export registers";
      $("history-total").textContent = buckets.length
        ? "Imported " + sum("import_kwh").toFixed(1) + " kWh, " + exported
        : "No readings in this period.";
      const section = $("history");
      section.dataset.loaded = current.kind + ":" + current.start;
      section.dataset.buckets = String(buckets.length);
      report("history", null);
    } catch (error) {
      report("history", error);
    }
  }

  document.querySelectorAll("#history .tabs button").forEach((button) => {
    button.addEventListener("click", () => loadHistory(P.period(button.dataset.period, config.day)));
  });
  $("history-prev").addEventListener("click", () => loadHistory(P.shift(history, -1)));
  $("history-next").addEventListener("click", () => loadHistory(P.shift(history, 1)));

  // ---- months -----------------------------------------------------------------------

  // Each cell carries its column's heading: on a narrow screen a row stacks into a
  // card of "heading: figure" lines (dashboard.css, .stack-narrow) instead of scrolling.
  function labelCells(table) {
    const headings = Array.from(table.tHead.rows[0].cells).map((th) => th.textContent);
    for (const row of table.tBodies[0].rows) {
      Array.from(row.cells).forEach((c, i) => (c.dataset.label = headings[i] || ""));
    }
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.append(td);
  }

  // The meter stamps the end of its quarter, our "Quarter" column shows its start; the
  // answer's meter_peak_match says whether the two name the same quarter, two quarters
  // of equal power (of those we name the earliest), or really different ones. The note
  // goes on a line of its own, so the column grows no wider.
  const MATCH_NOTE = { tie: "tie: equal power", different: "another quarter" };
  const MATCH_TITLE = {
    "same-quarter": "The end of the quarter we computed as the peak.",
    tie: "Another quarter of the same power as our peak: a tie. Of equal quarters we name the earliest; the meter named this one.",
    different: "The meter names a quarter other than our peak: one of lower power in our samples, or one we have no samples for.",
  };

  function noteMatch(td, match) {
    if (!match) return;
    td.title = MATCH_TITLE[match];
    if (!MATCH_NOTE[match]) return;
    const value = document.createElement("span");
    const note = document.createElement("span");
    note.className = "match muted";
    note.textContent = MATCH_NOTE[match];
    value.append(td.textContent, note);
    td.replaceChildren(value);
    td.classList.add("match-" + match);
  }

  async function loadMonthTable() {
    try {
      const answer = await getJSON(config.api.months, { count: config.month_table_months, end: config.month });
      const body = $("month-table").tBodies[0];
      body.replaceChildren();
      for (const m of answer.months) {
        const row = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = P.label(P.period("month", m.month + "-01"));
        row.append(th);
        if (m.peak_kw === null) row.classList.add("missing");
        cell(row, m.peak_kw === null ? "no data" : kw(m.peak_kw) + " kW", "num");
        cell(row, m.peak_quarter_start ? P.moment(m.peak_quarter_start) : "–");
        cell(row, kw(m.billed_peak_kw) + " kW", "num");
        const meter = m.meter_reported_peak;
        cell(row, meter ? kw(meter.kw) + " kW" : "–", "num");
        cell(row, meter && meter.ts ? P.moment(meter.ts) : "–");
        noteMatch(row.lastChild, m.meter_peak_match);
        const source = m.provenance;
        cell(row, source.kw === null ? source.source : kw(source.kw) + " kW (" + source.source + ")", "num");
        const cost = m.estimated_cost;
        cell(row, cost && cost.monthly_eur_incl_vat !== null ? "€ " + cost.monthly_eur_incl_vat.toFixed(2) : "–", "num");
        body.append(row);
      }
      labelCells($("month-table"));
      monthPeaks.clear();
      answer.months.forEach((m) => m.peak_kw !== null && monthPeaks.set(m.month, m.peak_kw));
      dayChart.update();
      $("months").dataset.loaded = String(answer.months.length);
      report("months", null);
    } catch (error) {
      report("months", error);
    }
  }

  async function loadReconciliation() {
    try {
      const answer = await getJSON(config.api.reconciliation, { count: config.month_table_months, end: config.month });
      const body = $("reconciliation-table").tBodies[0];
      body.replaceChildren();
      for (const m of answer.months) {
        if (m.operator_peak_kw === null && m.only_operator === 0) continue;
        const row = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = P.label(P.period("month", m.month + "-01"));
        row.append(th);
        cell(row, m.our_peak_kw === null ? "no data" : kw(m.our_peak_kw) + " kW", "num");
        cell(row, m.operator_peak_kw === null ? "no data" : kw(m.operator_peak_kw) + " kW", "num");
        const d = m.largest_difference;
        cell(row, d ? kw(d.difference_kw) + " kW at " + P.moment(d.start) : "–", "num");
        cell(row, String(m.only_ours), "num");
        cell(row, String(m.only_operator), "num");
        body.append(row);
      }
      labelCells($("reconciliation-table"));
      $("reconciliation").dataset.loaded = String(body.rows.length);
      report("reconciliation", null);
    } catch (error) {
      report("reconciliation", error);
    }
  }

  // ---- start ------------------------------------------------------------------------

  const picker = $("device-select");
  if (picker) picker.addEventListener("change", () => picker.form.submit());

  pollLive();
  loadMonth();
  loadDay(config.day);
  loadHistory(history);
  loadMonthTable();
  loadReconciliation();
  window.setInterval(loadMonth, 60000);
})();
