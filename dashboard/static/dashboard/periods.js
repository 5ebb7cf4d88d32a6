// Calendar arithmetic on local dates ("YYYY-MM-DD" in the device's time zone), done on
// UTC Date values so the browser's own time zone never shifts a day. No DOM, no fetch:
// the browser tests call these directly through window.P1Periods.
(function (root) {
  "use strict";

  function parse(text) {
    const [y, m, d] = text.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d));
  }

  function format(date) {
    return date.toISOString().slice(0, 10);
  }

  function addDays(text, days) {
    const date = parse(text);
    date.setUTCDate(date.getUTCDate() + days);
    return format(date);
  }

  function addMonths(text, months) {
    const date = parse(text);
    return format(new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + months, 1)));
  }

  // Weeks start on Monday, like the API's 1w buckets.
  function mondayOf(text) {
    const weekday = (parse(text).getUTCDay() + 6) % 7;
    return addDays(text, -weekday);
  }

  const KINDS = {
    day: { interval: "1h", start: (t) => t, step: (t, n) => addDays(t, n) },
    week: { interval: "1d", start: mondayOf, step: (t, n) => addDays(t, 7 * n) },
    month: { interval: "1d", start: (t) => t.slice(0, 8) + "01", step: addMonths },
    year: { interval: "1mo", start: (t) => t.slice(0, 5) + "01-01", step: (t, n) => addMonths(t, 12 * n) },
  };

  // The period of `kind` containing `day`: {start, end (exclusive), interval}.
  function period(kind, day) {
    const spec = KINDS[kind];
    const start = spec.start(day);
    return { kind: kind, start: start, end: spec.step(start, 1), interval: spec.interval };
  }

  // The period `offset` steps away (-1 previous, +1 next).
  function shift(current, offset) {
    return period(current.kind, KINDS[current.kind].step(current.start, offset));
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

  function label(current) {
    const start = parse(current.start);
    const y = start.getUTCFullYear();
    const m = MONTHS[start.getUTCMonth()];
    const d = start.getUTCDate();
    if (current.kind === "day") return WEEKDAYS[start.getUTCDay()] + " " + d + " " + m + " " + y;
    if (current.kind === "week") return "week of " + d + " " + m + " " + y;
    if (current.kind === "month") return m + " " + y;
    return String(y);
  }

  // "2026-11-27T17:15:00+01:00" -> parts of the local wall time, without time zone maths:
  // the API already answers in the device's zone.
  function wall(iso) {
    return {
      date: iso.slice(0, 10),
      time: iso.slice(11, 16),
      day: Number(iso.slice(8, 10)),
      month: MONTHS[Number(iso.slice(5, 7)) - 1],
      year: iso.slice(0, 4),
    };
  }

  function bucketLabel(kind, iso) {
    const w = wall(iso);
    if (kind === "day") return w.time;
    if (kind === "week") return WEEKDAYS[parse(w.date).getUTCDay()] + " " + w.day;
    if (kind === "month") return String(w.day);
    return w.month;
  }

  function moment(iso) {
    if (!iso) return "–";
    const w = wall(iso);
    return w.day + " " + w.month + " " + w.year + " " + w.time;
  }

  root.P1Periods = {
    addDays: addDays,
    addMonths: addMonths,
    mondayOf: mondayOf,
    period: period,
    shift: shift,
    label: label,
    bucketLabel: bucketLabel,
    moment: moment,
    dayLabel: (text) => label(period("day", text)),
  };
})(window);
