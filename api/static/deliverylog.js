// The account's delivery log (#/deliveries?event_type=...&outcome=...): every webhook's attempts, newest first,
// from GET /v1/deliveries. The filters live in the address, under the API's own names, so a view can be reloaded
// or shared; "Older" follows the keyset cursor (next_cursor) and appends the next rows, which the cursor keeps
// from repeating or skipping any while the log grows. It only reads, so any credential the page holds will do,
// a read-only portal session included. The API checks the filters (one rule, one place): its 422 is shown next
// to the field it names. On top of settings.js (api, el, state, notice, formatTime, setFieldError,
// loadWebhooks, closePanels) and detail.js (showView, crumbs, ms).
"use strict";

// query parameter -> its input
const LOG_FILTERS = {
  event_id: "log-event-id",
  event_type: "log-type",
  outcome: "log-outcome",
  status: "log-status",
  since: "log-since",
  until: "log-until",
};
const LOG_TIMES = new Set(["since", "until"]);
const LOG_PAGE_SIZE = 25;
// `version` drops a page that arrives after the filters changed or a newer page was asked for; `keepFocus`: the form asked, so focus stays there.
const logState = { filters: {}, cursor: null, version: 0, keepFocus: false };

// <input type="datetime-local"> holds a wall-clock time without a zone; the labels say UTC, so it is UTC.
const utcOfInput = (value) => (value ? `${value.length === 16 ? `${value}:00` : value}Z` : "");
const inputOfUtc = (iso) => {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)(?:\.\d+)?Z$/.exec(iso || "");
  return match ? match[1] : "";
};

async function openLog(query) {
  closePanels();
  notice("");
  state.detail = null;
  showView("log");
  crumbs({ text: "Delivery log", href: "#/deliveries" });
  const wanted = new URLSearchParams(query);
  logState.filters = {};
  for (const name of Object.keys(LOG_FILTERS)) {
    const value = (wanted.get(name) || "").trim();
    if (value) logState.filters[name] = value;
  }
  fillLogTypes();
  for (const [name, id] of Object.entries(LOG_FILTERS)) {
    const value = logState.filters[name] || "";
    $(id).value = LOG_TIMES.has(name) ? inputOfUtc(value) : value;
    setFieldError(id, "");
  }
  logState.cursor = null;
  $("log-table").querySelector("tbody").replaceChildren();
  $("log-table").hidden = true;
  $("log-older").hidden = true;
  $("log-summary").textContent = "Loading…";
  if (!logState.keepFocus) $("log-title").focus();
  logState.keepFocus = false;
  const version = ++logState.version; // a page still coming for the filters before these is dropped
  await loadWebhooks(); // the names of webhooks made since the page opened
  if (version === logState.version) await loadLogPage(false);
}

function fillLogTypes() {
  const select = $("log-type");
  if (select.options.length > 1) return;
  for (const entry of state.eventTypes) select.append(el("option", { value: entry.type, text: entry.type }));
}

function searchLog(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [name, id] of Object.entries(LOG_FILTERS)) {
    const value = LOG_TIMES.has(name) ? utcOfInput($(id).value) : $(id).value.trim();
    if (value) params.set(name, value);
  }
  const target = params.toString() ? `#/deliveries?${params}` : "#/deliveries";
  logState.keepFocus = true;
  if (location.hash === target) route(); // detail.js: the same filters again (fresh rows)
  else location.hash = target;
}

async function loadLogPage(more) {
  const version = ++logState.version;
  const params = new URLSearchParams({ ...logState.filters, limit: String(LOG_PAGE_SIZE) });
  if (more) params.set("cursor", logState.cursor);
  const body = $("log-table").querySelector("tbody");
  let page;
  try {
    page = await api("GET", `/v1/deliveries?${params}`);
  } catch (error) {
    if (version === logState.version) showLogError(error);
    return;
  }
  if (version !== logState.version) return;
  const names = new Map(state.webhooks.map((webhook) => [webhook.id, webhook.name]));
  const rows = page.data.map((row) => logSearchRow(row, names));
  body.append(...rows);
  logState.cursor = page.next_cursor;
  $("log-older").hidden = !page.next_cursor;
  $("log-table").hidden = body.children.length === 0;
  const shown = body.children.length;
  $("log-summary").textContent = !shown
    ? "No deliveries match these filters."
    : `${shown} ${shown === 1 ? "attempt" : "attempts"} shown, newest first` +
      (page.next_cursor ? "; Older shows the next ones." : "; that is all of them.");
  if (more && rows.length) rows[0].querySelector("a").focus(); // the first new row, where reading goes on
}

function showLogError(error) {
  const id = LOG_FILTERS[(error.field || "").split(".")[0]];
  if (error.status === 422 && id) {
    setFieldError(id, error.message.replace(/^[a-z_.0-9]+: /, ""));
    $("log-summary").textContent = "Fix the filter marked above and search again.";
    $(id).focus();
  } else if (error.status === 410 && error.code === "past_retention") {
    $("log-older").hidden = true;
    $("log-summary").textContent = `Older deliveries are past the retention: ${error.message}.`;
  } else {
    $("log-summary").textContent = `Could not load the delivery log: ${error.message}`;
  }
}

function logSearchRow(row, names) {
  const name = names.get(row.webhook_id);
  const status = row.status_code !== null ? String(row.status_code) : row.error || row.outcome;
  const time = formatTime(row.attempted_at);
  const type = el("td", {}, row.event_type);
  if (row.test) type.append(" ", el("span", { class: "badge test", text: "test" }));
  if (row.replay) type.append(" ", el("span", { class: "badge replay", text: "replay", title: row.replay }));
  return el(
    "tr",
    { "data-attempt-id": row.attempt_id },
    el("td", { class: "mono time" }, el("a", { href: `#/deliveries/${encodeURIComponent(row.attempt_id)}`, text: time,
      "aria-label": `Attempt ${row.attempt} of ${row.event_id} to ${name || row.webhook_id}, ${time} UTC` })),
    el(
      "td",
      { class: "webhook" },
      name ? el("a", { href: `#/webhooks/${encodeURIComponent(row.webhook_id)}`, text: name }) : "Deleted webhook",
      el("small", { class: "mono", text: row.webhook_id }),
    ),
    type,
    el("td", { class: "mono" }, el("a", { href: `#/events/${encodeURIComponent(row.event_id)}`, text: row.event_id })),
    el("td", { text: String(row.attempt) }),
    el("td", {}, el("span", { class: `badge ${row.outcome === "success" ? "success" : "failure"}`, text: status })),
    el("td", { text: ms(row.response_ms) }),
  );
}

document.addEventListener("DOMContentLoaded", () => {
  $("log-search").addEventListener("submit", searchLog);
  $("log-clear").addEventListener("click", () => {
    logState.keepFocus = true;
    if (location.hash === "#/deliveries") route();
    else location.hash = "#/deliveries";
  });
  $("log-older").addEventListener("click", () => loadLogPage(true));
});
