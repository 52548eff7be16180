// Where did an event go (#/events/{event_id}): the search box above every view takes an event id and opens this
// view, which shows, per webhook of the account, what became of the event and each attempt (GET /v1/events/{id}).
// On top of settings.js (api, el, state, notice) and detail.js (showView, crumbs, outcomeText, ms).
"use strict";

const EVENT_ID = /^evt_[0-9A-Za-z]{1,64}$/;

// state -> [badge class, text]
const EVENT_STATES = {
  delivered: ["success", "Delivered"],
  pending: ["test", "Pending: a retry, redrive or replay is coming"],
  dead_lettered: ["failure", "Dead-lettered: Recover sends it again"],
  disabled: ["failure", "Receiver answered 410 Gone: webhook switched off"],
  dropped: ["test", "Dropped: the webhook was off, deleted or unsubscribed"],
  failed: ["failure", "Failed"],
};

function setSearchError(message) {
  $("event-search-error").textContent = message;
  if (message) $("event-search-id").setAttribute("aria-invalid", "true");
  else $("event-search-id").removeAttribute("aria-invalid");
}

function findEvent(event) {
  event.preventDefault();
  const id = $("event-search-id").value.trim();
  if (!EVENT_ID.test(id)) {
    setSearchError("Enter an event id: evt_ and then letters and digits, e.g. evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W.");
    $("event-search-id").focus();
    return;
  }
  setSearchError("");
  const target = `#/events/${id}`;
  if (location.hash === target) route(); // detail.js: open it again (fresh attempts)
  else location.hash = target;
}

async function openEvent(id) {
  closePanels();
  notice("");
  state.detail = null;
  showView("event");
  crumbs({ text: `Event ${id}`, href: `#/events/${encodeURIComponent(id)}` });
  $("event-search-id").value = id;
  $("event-webhooks").replaceChildren();
  $("event-payload-panel").hidden = true;
  $("event-title").textContent = `Event ${id}`;
  let view;
  try {
    view = await api("GET", `/v1/events/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status !== 404 && error.status !== 422) throw error;
    $("event-summary").textContent =
      error.status === 404
        ? "Not found: no webhook of your account logged this event. It may not have been sent to one yet, or it is past the retention."
        : error.message;
    $("event-title").focus();
    return;
  }
  const types = view.webhooks.length === 1 ? "1 webhook" : `${view.webhooks.length} webhooks`;
  const created = view.created_at ? `published ${formatTime(view.created_at)} UTC · ` : "";
  $("event-summary").textContent = `${view.event_type} · ${created}sent to ${types}`;
  $("event-webhooks").replaceChildren(...view.webhooks.map(webhookPanel));
  $("event-payload").textContent =
    view.payload === null ? "The payload is past the retention." : JSON.stringify(view.payload, null, 2);
  $("event-payload-panel").hidden = false;
  if (view.truncated) notice("This event has more attempts than shown; search the delivery log for the rest.");
  $("event-title").focus();
}

function webhookPanel(hook) {
  const name = hook.webhook_name || `Deleted webhook ${hook.webhook_id}`;
  const [badgeClass, stateText] = EVENT_STATES[hook.state] || ["test", hook.state];
  const titleId = `event-wh-${hook.webhook_id}`;
  const title = el(
    "h2",
    { id: titleId },
    hook.webhook_name ? el("a", { href: `#/webhooks/${hook.webhook_id}`, text: name }) : name,
    el("span", { class: `badge ${badgeClass}`, text: stateText }),
  );
  const rows = hook.attempts.map((a) => {
    const kind = [];
    if (a.test) kind.push(" ", el("span", { class: "badge test", text: "test" }));
    if (a.replay) kind.push(" ", el("span", { class: "badge replay", text: "replay", title: a.replay }));
    return el(
      "tr",
      {},
      el("td", { class: "mono time" }, el("a", { href: `#/deliveries/${a.attempt_id}`, text: formatTime(a.attempted_at),
        "aria-label": `Attempt ${a.attempt} to ${name}, ${formatTime(a.attempted_at)} UTC` })),
      el("td", {}, String(a.attempt), ...kind),
      el("td", {}, el("span", { class: `badge ${a.outcome === "success" ? "success" : "failure"}`,
        text: a.status_code !== null ? String(a.status_code) : a.error || a.outcome })),
      el("td", { text: ms(a.response_ms) }),
      el("td", { text: outcomeText(a) }),
      el("td", { text: a.next_step }),
    );
  });
  const table = el(
    "table",
    { class: "event-attempts" },
    el("caption", { class: "visually-hidden", text: `Attempts to ${name}, oldest first` }),
    el(
      "thead",
      {},
      el("tr", {}, ...["Time (UTC)", "Attempt", "Status", "Response time", "Outcome", "Then"].map((h) =>
        el("th", { scope: "col", text: h }))),
    ),
    el("tbody", {}, ...rows),
  );
  const facts = [];
  if (hook.dead_letter) {
    const d = hook.dead_letter;
    facts.push(
      el("p", { class: "facts dead-letter", text: `Dead letter since ${formatTime(d.dead_at)} UTC (${d.last_error || "failed"})` +
        (d.redriven_at ? `, queued again ${formatTime(d.redriven_at)} UTC` : "") }),
    );
  }
  for (const r of hook.replays) {
    facts.push(el("p", { class: "facts replay", text: `Replay ${r.replay_id}: ` +
      (r.queued_at ? `queued ${formatTime(r.queued_at)} UTC` : "not queued yet") }));
  }
  return el(
    "section",
    { class: "panel event-webhook", "aria-labelledby": titleId, "data-webhook-id": hook.webhook_id },
    title,
    el("p", { class: "mono hint", text: hook.webhook_id }),
    table,
    ...facts,
  );
}

document.addEventListener("DOMContentLoaded", () => {
  $("event-search").addEventListener("submit", findEvent);
});
