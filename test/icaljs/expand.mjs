// Reads an iCalendar file with Mozilla's ical.js (independent of gxconf's Go
// code) and prints its events with their occurrences as JSON:
//   node expand.mjs <file.ics> [max occurrences per event]
// Times are converted to UTC with the file's own VTIMEZONEs only: ical.js
// ships no time zone database, so a wrong or missing VTIMEZONE shows.
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const [, , file, maxArg] = process.argv;
const max = Number(maxArg || 2000);
const cal = new ICAL.Component(ICAL.parse(readFileSync(file, "utf8")));

const zones = [];
for (const vtz of cal.getAllSubcomponents("vtimezone")) {
  const tz = new ICAL.Timezone(vtz);
  ICAL.TimezoneService.register(tz.tzid, tz);
  zones.push(tz.tzid);
}

// Every TZID a property names.
const tzids = new Set();
const collect = (comp) => {
  for (const p of comp.getAllProperties()) {
    const id = p.getParameter("tzid");
    if (id) tzids.add(id);
  }
  comp.getAllSubcomponents().forEach(collect);
};
cal.getAllSubcomponents("vevent").forEach(collect);

const iso = (t) => t.toJSDate().toISOString();
// Moved occurrences (VEVENTs with RECURRENCE-ID) belong to their series.
const all = cal.getAllSubcomponents("vevent").map((v) => ({ v, ev: new ICAL.Event(v) }));
const masters = new Map();
for (const e of all) if (!e.ev.isRecurrenceException()) masters.set(e.ev.uid, e);
let overrides = 0;
const shown = all.filter((e) => {
  if (e.ev.isRecurrenceException() && masters.has(e.ev.uid)) {
    masters.get(e.ev.uid).ev.relateException(e.ev);
    overrides++;
    return false;
  }
  return true;
});
const events = shown.map(({ v, ev }) => {
  const out = {
    uid: ev.uid,
    sequence: ev.sequence,
    summary: ev.summary,
    status: v.getFirstPropertyValue("status"),
    location: ev.location,
    url: v.getFirstPropertyValue("url"),
    start_zone: ev.startDate.zone ? ev.startDate.zone.tzid : "",
    recurrence_id: ev.recurrenceId ? iso(ev.recurrenceId) : "",
    occurrences: [],
  };
  if (ev.isRecurring()) {
    const it = ev.iterator();
    let next;
    while ((next = it.next()) && out.occurrences.length < max) {
      const d = ev.getOccurrenceDetails(next);
      out.occurrences.push({ start: iso(d.startDate), end: iso(d.endDate), local: d.startDate.toString() });
    }
    out.occurrences.sort((a, b) => a.start.localeCompare(b.start));
  } else {
    out.occurrences.push({ start: iso(ev.startDate), end: iso(ev.endDate), local: ev.startDate.toString() });
  }
  return out;
});

process.stdout.write(JSON.stringify({
  method: cal.getFirstPropertyValue("method"),
  vtimezones: zones,
  tzids: [...tzids].sort(),
  overrides,
  events,
}) + "\n");
