// Settings -> Webhooks: a thin client of the public /v1 API. Every value from the server is written with
// textContent (never innerHTML), so a webhook name or a response excerpt cannot inject markup.
"use strict";

const KEY_STORAGE = "hookfleet.apiKey";
const PORTAL_STORAGE = "hookfleet.portal";
const state = { webhooks: [], eventTypes: [], current: null, logsCursor: null, portal: null };
const $ = (id) => document.getElementById(id);

// The credential every request sends: an API key typed in, or a portal session opened from a one-time link.
// Kept in memory, and in sessionStorage (this tab only, so a reload keeps it) where the browser allows it:
// inside another site's frame it may refuse storage, and the page works without it. Never a cookie.
const credential = {
  value: null,
  get() {
    if (this.value === null) {
      try {
        this.value = sessionStorage.getItem(KEY_STORAGE) || "";
      } catch {
        this.value = "";
      }
    }
    return this.value;
  },
  set(value, portal = null) {
    this.value = value;
    state.portal = portal;
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
      if (portal) sessionStorage.setItem(PORTAL_STORAGE, JSON.stringify(portal));
      else sessionStorage.removeItem(PORTAL_STORAGE);
    } catch {
      // storage refused: memory only
    }
  },
  // After a reload: the portal session this tab had opened (its read-only flag), if any.
  restorePortal() {
    try {
      state.portal = JSON.parse(sessionStorage.getItem(PORTAL_STORAGE) || "null");
    } catch {
      state.portal = null;
    }
  },
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail.message || `request failed (${status})`);
    this.status = status;
    this.code = detail.code;
    this.field = detail.field;
  }
}

async function api(method, path, body, { signOutOn401 = true } = {}) {
  const headers = { Authorization: `Bearer ${credential.get()}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { code: "network", message: "The server could not be reached. Check your connection." });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new ApiError(response.status, (data && data.error) || {});
    if (response.status === 401 && signOutOn401) signOut("Your API key was not accepted. Sign in again.");
    throw error;
  }
  return data;
}

function notice(text, isError = false) {
  const box = $("notice");
  box.className = isError ? "error" : "";
  box.textContent = text;
}

function focusHeading(id) {
  const heading = $(id);
  heading.focus();
  heading.scrollIntoView({ block: "nearest" });
}

function formatTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "";
}

// ----------------------------------------------------------------------------------------- sign in

function signOut(message) {
  const portal = state.portal;
  credential.set("");
  if (portal) return portalEnded("Your session has ended. Open Webhooks again from the app that brought you here.");
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
  setFieldError("api-key", message || "");
  $("api-key").value = "";
  $("api-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return setFieldError("api-key", "Enter your API key.");
  credential.set(key);
  try {
    await api("GET", "/v1/webhooks", undefined, { signOutOn401: false });
  } catch (error) {
    credential.set("");
    return setFieldError("api-key", error.status === 401 ? "This API key is not valid." : error.message);
  }
  setFieldError("api-key", "");
  await showApp();
}

async function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = Boolean(state.portal); // a portal session ends with the product's page
  $("portal-banner").hidden = !(state.portal && state.portal.read_only);
  document.body.classList.toggle("portal", Boolean(state.portal));
  if (!state.eventTypes.length) {
    const catalog = await api("GET", "/v1/event-types");
    state.eventTypes = catalog.data;
    renderEventChoices();
  }
  await loadWebhooks();
  const account = await api("GET", "/v1/account");
  $("notify-email").value = account.notification_email || "";
  showConfirmation(account);
  $("app-title").setAttribute("tabindex", "-1");
  await route(); // detail.js: the view the address names (the list by default)
}

// ----------------------------------------------------------------------------------------- list

// Bumped by every change made from this page: a list fetched before a change landed is stale and
// must not repaint over it (a Test refreshes the list while the user may already be toggling Active).
let listVersion = 0;

async function loadWebhooks() {
  const version = ++listVersion;
  const list = await api("GET", "/v1/webhooks");
  if (version !== listVersion) return;
  state.webhooks = list.data;
  renderWebhooks();
}

function statusBadge(status) {
  return el("span", { class: `badge ${status}`, text: status === "healthy" ? "Healthy" : "Failing" });
}

const OFF_REASONS = {
  gone: "Receiver answered 410 Gone",
  failing: "Kept failing too long",
  manual: "Switched off by hand",
};

// Why a webhook is off and since when (empty while it is on).
function offReason(webhook) {
  if (webhook.active) return "";
  const why = OFF_REASONS[webhook.disabled_reason] || "Switched off";
  return webhook.disabled_at ? `${why} · since ${new Date(webhook.disabled_at).toLocaleString()}` : why;
}

function renderWebhooks() {
  const body = $("webhooks").querySelector("tbody");
  body.replaceChildren();
  $("empty").hidden = state.webhooks.length > 0;
  $("webhooks").hidden = state.webhooks.length === 0;
  for (const webhook of state.webhooks) {
    const toggle = el("input", {
      type: "checkbox",
      role: "switch",
      checked: webhook.active,
      "aria-label": `Active: ${webhook.name}`,
      onchange: (event) => setActive(webhook, event.target),
    });
    const row = el(
      "tr",
      { "data-webhook-id": webhook.id },
      el("th", { scope: "row" }, el("a", { href: `#/webhooks/${webhook.id}`, text: webhook.name })),
      el("td", { class: "url", text: webhook.url }),
      el("td", { class: "events", text: webhook.events.join(", ") }),
      el("td", {}, statusBadge(webhook.status)),
      el(
        "td",
        {},
        el("label", { class: "switch" }, toggle, el("span", { text: webhook.active ? "On" : "Off" })),
        el("small", { class: "off-reason", text: offReason(webhook) }),
      ),
      el(
        "td",
        {},
        el(
          "div",
          { class: "row-actions" },
          el("button", { type: "button", text: "Test", "aria-label": `Test ${webhook.name}`, onclick: () => openTest(webhook) }),
          el("button", {
            type: "button",
            text: "Rotate secret",
            "aria-label": `Rotate the secret of ${webhook.name}`,
            onclick: () => rotate(webhook),
          }),
          el("button", {
            type: "button",
            class: "danger",
            text: "Delete",
            "aria-label": `Delete ${webhook.name}`,
            onclick: () => remove(webhook),
          }),
        ),
      ),
    );
    body.append(row);
  }
}

async function setActive(webhook, checkbox) {
  // The switch stays enabled and focused while the request runs, so keyboard users keep their place.
  const wanted = checkbox.checked;
  listVersion++;
  checkbox.setAttribute("aria-busy", "true");
  try {
    const updated = await api("PATCH", `/v1/webhooks/${webhook.id}`, { active: wanted });
    Object.assign(webhook, updated);
    checkbox.checked = updated.active;
    notice(`${webhook.name} is now ${wanted ? "active" : "paused: nothing is sent until you switch it on"}.`);
  } catch (error) {
    checkbox.checked = !wanted;
    notice(`Could not change ${webhook.name}: ${error.message}`, true);
  } finally {
    checkbox.removeAttribute("aria-busy");
    checkbox.nextElementSibling.textContent = checkbox.checked ? "On" : "Off";
    const note = checkbox.closest("td").querySelector(".off-reason");
    if (note) note.textContent = offReason(webhook);
  }
}

async function rotate(webhook) {
  if (!window.confirm(`Rotate the secret of ${webhook.name}? The old secret keeps signing for a while.`)) return;
  try {
    const rotated = await api("POST", `/v1/webhooks/${webhook.id}/rotate-secret`);
    showSecret(rotated);
    await loadWebhooks();
  } catch (error) {
    notice(`Could not rotate the secret: ${error.message}`, true);
  }
}

async function remove(webhook) {
  if (!window.confirm(`Delete ${webhook.name}? Deliveries to it stop at once.`)) return;
  try {
    await api("DELETE", `/v1/webhooks/${webhook.id}`);
    notice(`${webhook.name} was deleted.`);
    closePanels();
    await loadWebhooks();
    if (location.hash !== "#/") location.hash = "#/";
  } catch (error) {
    notice(`Could not delete ${webhook.name}: ${error.message}`, true);
  }
}

// ----------------------------------------------------------------------------------------- create

function renderEventChoices() {
  const box = $("wh-events");
  box.replaceChildren();
  for (const entry of state.eventTypes) {
    const id = `ev-${entry.type.replace(".", "-")}`;
    box.append(
      el(
        "label",
        { for: id },
        el("input", { type: "checkbox", id, name: "events", value: entry.type }),
        el("span", { text: entry.type }),
        el("small", { text: entry.kind === "operational" ? `About your webhooks: ${entry.fires_when}` : entry.fires_when }),
      ),
    );
    $("test-type").append(el("option", { value: entry.type, text: entry.type }));
    $("logs-type").append(el("option", { value: entry.type, text: entry.type }));
  }
}

const FORM_FIELDS = {
  name: "wh-name",
  url: "wh-url",
  events: "wh-events",
  rate_limit_per_s: "wh-rate",
  headers: "wh-headers",
  asymmetric_signing: "wh-ed25519",
  filter: "wh-filter",
};

// "Name: value" lines -> {Name: "value"}; a line without a colon is reported by the API's own check.
function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at < 0) headers[line.trim()] = "";
    else headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return headers;
}

function setFieldError(inputId, message) {
  const target = inputId === "wh-events" ? $("wh-events").closest("fieldset") : $(inputId);
  $(`${inputId}-error`).textContent = message;
  if (message) target.setAttribute("aria-invalid", "true");
  else target.removeAttribute("aria-invalid");
}

function focusField(field) {
  const target = $(FORM_FIELDS[field]);
  (field === "events" ? target.querySelector("input") : target).focus();
}

function clearFormErrors() {
  for (const id of Object.values(FORM_FIELDS)) setFieldError(id, "");
  $("form-error").textContent = "";
}

function openForm() {
  closePanels();
  state.editing = null;
  $("webhook-form").reset();
  clearFormErrors();
  $("form-title").textContent = "New webhook";
  $("form-submit").textContent = "Create webhook";
  $("form-hint").hidden = true;
  $("wh-headers-keep").textContent = "";
  $("filter-preview-box").hidden = true; // a preview reads a webhook's subscribed events: once it exists
  $("filter-preview-result").textContent = "";
  $("webhook-form").hidden = false;
  $("wh-name").focus();
}

// The candidate filter over the account's stored events (POST .../filter-preview): what it would send,
// leave out and fail on. One page of at most 10,000 events; the answer says when the scan stopped early.
async function previewFilter() {
  const webhook = state.editing;
  const result = $("filter-preview-result");
  setFieldError("wh-filter", "");
  const filter = $("wh-filter").value.trim();
  if (!webhook) return;
  if (!filter) {
    result.textContent = "Without a filter every event of the chosen types is sent.";
    return;
  }
  result.textContent = "Previewing…";
  try {
    const days = Number($("wh-filter-days").value);
    const page = await api("POST", `/v1/webhooks/${webhook.id}/filter-preview`, { filter, days, limit: 10000 });
    const evaluated = page.matched + page.not_matched + page.errored;
    let text = `Of ${evaluated} stored events of its types: ${page.matched} would be sent, ${page.not_matched} left out,`
      + ` ${page.errored} could not be evaluated (not sent).`;
    const failure = page.samples.errored[0];
    if (failure) text += ` For example ${failure.event_id}: ${failure.error}.`;
    if (page.cut_short) text += " The scan stopped at its time limit: these are the newest events only.";
    else if (page.next_cursor) text += " Only the newest 10,000 stored events were read.";
    if (!evaluated) text = `No stored events of its types in the last ${days} day(s).`;
    result.textContent = text;
  } catch (error) {
    result.textContent = "";
    showApiError(error);
  }
}

function validateForm(body) {
  const problems = {};
  if (!body.name.trim()) problems.name = "Enter a name.";
  if (!/^https:\/\/\S+$/.test(body.url)) problems.url = "Enter a URL that starts with https://";
  if (!body.events.length) problems.events = "Choose at least one event.";
  const rate = body.rate_limit_per_s;
  if (rate !== undefined && !(Number.isInteger(rate) && rate >= 1 && rate <= 10000)) {
    problems.rate_limit_per_s = "Enter a whole number from 1 to 10000, or leave it empty.";
  }
  return problems;
}

async function createWebhook(event) {
  event.preventDefault();
  clearFormErrors();
  if (state.editing) return saveEdit(); // detail.js
  const form = $("webhook-form");
  const body = {
    name: $("wh-name").value,
    url: $("wh-url").value.trim(),
    events: [...form.querySelectorAll("input[name=events]:checked")].map((box) => box.value),
    ordering: $("wh-fifo").checked ? "fifo" : "unordered",
    asymmetric_signing: $("wh-ed25519").checked,
    redrive_on_recovery: $("wh-redrive").checked,
  };
  const rate = $("wh-rate").value.trim();
  if (rate) body.rate_limit_per_s = Number(rate);
  const headers = parseHeaders($("wh-headers").value);
  if (Object.keys(headers).length) body.headers = headers;
  const filter = $("wh-filter").value.trim();
  if (filter) body.filter = filter;
  const problems = validateForm(body);
  if (Object.keys(problems).length) {
    for (const [field, message] of Object.entries(problems)) setFieldError(FORM_FIELDS[field], message);
    focusField(Object.keys(problems)[0]);
    return;
  }
  try {
    const created = await api("POST", "/v1/webhooks", body);
    form.hidden = true;
    showSecret(created);
    await loadWebhooks();
  } catch (error) {
    showApiError(error);
  }
}

// The API's message next to the field it names (the first part of `error.field`), else under the form.
function showApiError(error) {
  const field = (error.field || "").split(".")[0];
  if (FORM_FIELDS[field]) {
    setFieldError(FORM_FIELDS[field], error.message.replace(/^[a-z_.0-9]+: /, ""));
    focusField(field);
  } else {
    $("form-error").textContent = error.message;
  }
}

async function saveNotifyEmail(event) {
  event.preventDefault();
  $("notify-error").textContent = "";
  $("notify-email").removeAttribute("aria-invalid");
  try {
    const account = await api("PATCH", "/v1/account", { notification_email: $("notify-email").value.trim() });
    showConfirmation(account);
    if (!account.notification_email) notice("No failure e-mails.");
    else if (account.notification_email_confirmed) notice(`Failure notifications go to ${account.notification_email}.`);
    else {
      notice(`Saved. ${account.notification_email} gets failure e-mails once you enter the code mailed to it.`);
      $("confirm-code").focus();
    }
  } catch (error) {
    $("notify-error").textContent = error.message.replace(/^[a-z_.0-9]+: /, "");
    $("notify-email").setAttribute("aria-invalid", "true");
  }
}

// An address gets mail only once the code mailed to it is entered here (or through the API or CLI).
function showConfirmation(account) {
  $("confirm-form").hidden = !account.notification_email || account.notification_email_confirmed;
  $("confirm-error").textContent = "";
  $("confirm-code").removeAttribute("aria-invalid");
  $("confirm-code").value = "";
}

async function confirmNotifyEmail(event) {
  event.preventDefault();
  $("confirm-error").textContent = "";
  $("confirm-code").removeAttribute("aria-invalid");
  try {
    const account = await api("POST", "/v1/account/notification-email/confirm", { code: $("confirm-code").value.trim() });
    showConfirmation(account);
    notice(`Confirmed: failure notifications go to ${account.notification_email}.`);
  } catch (error) {
    $("confirm-error").textContent = error.message.replace(/^[a-z_.0-9]+: /, "");
    $("confirm-code").setAttribute("aria-invalid", "true");
  }
}

// ----------------------------------------------------------------------------------------- secret

function showSecret(webhook) {
  $("secret-title").textContent = `Signing secret of ${webhook.name}`;
  $("secret-value").value = webhook.secret;
  $("copy-status").textContent = "";
  $("created-public-key").value = webhook.public_key || "";
  $("secret-public-key").hidden = !webhook.public_key;
  $("secret-panel").hidden = false;
  focusHeading("secret-title");
}

async function copySecret() {
  const input = $("secret-value");
  try {
    await navigator.clipboard.writeText(input.value);
    $("copy-status").textContent = "Copied to the clipboard.";
  } catch {
    input.select();
    $("copy-status").textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
}

function hideSecret() {
  $("secret-value").value = "";
  $("secret-panel").hidden = true;
  const back = !$("detail-view").hidden ? $("detail-title") : $("new-webhook");
  back.focus();
}

// ----------------------------------------------------------------------------------------- test

function closePanels() {
  for (const id of ["test-panel", "webhook-form"]) $(id).hidden = true;
  state.current = null;
  state.editing = null;
}

function openTest(webhook) {
  closePanels();
  state.current = webhook;
  $("test-title").textContent = `Send a test to ${webhook.name}`;
  $("test-type").value = webhook.events[0];
  $("test-result").replaceChildren();
  $("test-panel").hidden = false;
  focusHeading("test-title");
}

async function sendTest(event) {
  event.preventDefault();
  const webhook = state.current;
  const result = $("test-result");
  result.replaceChildren(el("p", { text: "Sending…" }));
  try {
    const answer = await api("POST", `/v1/webhooks/${webhook.id}/test`, { event_type: $("test-type").value });
    const what = answer.status_code !== null ? `HTTP ${answer.status_code}` : answer.error;
    result.replaceChildren(
      el(
        "p",
        { class: "summary" },
        el("span", { class: `badge ${answer.ok ? "success" : "failure"}`, text: answer.ok ? "Delivered" : "Failed" }),
        ` ${what} in ${answer.response_ms} ms`,
      ),
      el("p", { text: `Event ${answer.event_id} (${answer.event_type})` }),
      el("pre", { class: "excerpt", "aria-label": "Response body", text: answer.response_excerpt || "(empty body)" }),
    );
    await loadWebhooks();
    if (state.detail && state.detail.id === webhook.id) await Promise.all([loadStats(), loadLogs(false)]); // detail.js
  } catch (error) {
    result.replaceChildren(el("p", { class: "field-error", text: error.message }));
  }
}

// ----------------------------------------------------------------------------------------- logs

// The log of the webhook shown in the detail view (detail.js sets state.detail).
async function loadLogs(more) {
  const webhook = state.detail;
  const params = new URLSearchParams({ limit: "25" });
  if ($("logs-type").value) params.set("event_type", $("logs-type").value);
  if ($("logs-outcome").value) params.set("outcome", $("logs-outcome").value);
  if (more && state.logsCursor) params.set("cursor", state.logsCursor);
  const body = $("logs").querySelector("tbody");
  try {
    const page = await api("GET", `/v1/webhooks/${webhook.id}/deliveries?${params}`);
    if (!more) body.replaceChildren();
    for (const row of page.data) body.append(logRow(row));
    state.logsCursor = page.next_cursor;
    $("logs-more").hidden = !page.next_cursor;
    $("logs-empty").hidden = body.children.length > 0;
    $("logs").hidden = body.children.length === 0;
  } catch (error) {
    notice(`Could not load deliveries: ${error.message}`, true);
  }
}

function logRow(row) {
  const ok = row.outcome === "success";
  const status = row.status_code !== null ? String(row.status_code) : row.error || row.outcome;
  const kind = el("td", {}, row.event_type);
  if (row.test) kind.append(" ", el("span", { class: "badge test", text: "test" }));
  if (row.replay) kind.append(" ", el("span", { class: "badge replay", text: "replay", title: row.replay }));
  return el(
    "tr",
    {},
    el("td", { class: "mono time", text: formatTime(row.attempted_at) }),
    kind,
    el("td", { class: "mono" }, el("a", { href: `#/deliveries/${row.attempt_id}`, text: row.event_id,
      "aria-label": `Delivery of event ${row.event_id}, attempt ${row.attempt}` })),
    el("td", { text: String(row.attempt) }),
    el("td", {}, el("span", { class: `badge ${ok ? "success" : "failure"}`, text: status })),
    el("td", { text: row.response_ms === null ? "—" : `${row.response_ms} ms` }),
    el("td", { class: "mono", text: row.response_excerpt.slice(0, 80) }),
    el(
      "td",
      {},
      el("button", {
        type: "button",
        text: "Redeliver",
        "aria-label": `Redeliver event ${row.event_id}`,
        onclick: () => redeliver(row),
      }),
    ),
  );
}

async function redeliver(row) {
  try {
    await api("POST", `/v1/deliveries/${row.attempt_id}/redeliver`);
    notice(`Event ${row.event_id} is queued for delivery again.`);
  } catch (error) {
    notice(`Could not redeliver: ${error.message}`, true);
  }
}

// ----------------------------------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("new-webhook").addEventListener("click", openForm);
  $("cancel-form").addEventListener("click", () => {
    const editing = state.editing;
    closePanels();
    if (editing) location.hash = `#/webhooks/${editing.id}`;
    else $("new-webhook").focus();
  });
  $("webhook-form").addEventListener("submit", createWebhook);
  $("filter-preview").addEventListener("click", previewFilter);
  $("notify-form").addEventListener("submit", saveNotifyEmail);
  $("confirm-form").addEventListener("submit", confirmNotifyEmail);
  $("copy-secret").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", hideSecret);
  $("test-form").addEventListener("submit", sendTest);
  $("logs-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadLogs(false);
  });
  $("logs-refresh").addEventListener("click", () => loadLogs(false));
  $("logs-more").addEventListener("click", () => loadLogs(true));
  for (const button of document.querySelectorAll(".close-panel")) button.addEventListener("click", closePanels);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.current) closePanels();
  });
  const linkToken = takeLinkToken();
  if (linkToken) openPortal(linkToken);
  else if (credential.get()) {
    credential.restorePortal();
    showApp().catch(() => signOut("Sign in again."));
  } else if (window.self !== window.top) {
    // Inside another site's page an API key is never asked for: a frame opens only from a portal link.
    portalEnded("This page opens from a link of the app it is shown in. Open Webhooks again from the app that brought you here.");
  } else $("api-key").focus();
});

// ----------------------------------------------------------------------------------------- portal links

// A portal link carries its one-time token in the fragment (#token=...), which browsers never send to a
// server. Taken out of the address bar at once, before anything else runs, so it is not in the history,
// a bookmark or a reload; the page's own routes live in the fragment too (#/...).
function takeLinkToken() {
  const match = /^#token=([A-Za-z0-9_-]{16,200})$/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  return match[1];
}

const LINK_REFUSED = {
  portal_link_expired: "This link has expired: links open only within a few minutes of being made.",
  portal_link_used: "This link was already used: each link opens the page once.",
  portal_link_revoked: "This link was revoked.",
  portal_link_invalid: "This link is not valid.",
};

async function openPortal(token) {
  $("signin").hidden = true;
  let response;
  try {
    response = await fetch("/v1/portal-sessions/exchange", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    return portalEnded("The server could not be reached. Check your connection and open Webhooks again.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const code = data.error && data.error.code;
    const why = LINK_REFUSED[code] || (data.error && data.error.message) || `The link was refused (${response.status}).`;
    return portalEnded(`${why} Open Webhooks again from the app that brought you here.`);
  }
  credential.set(data.session, { id: data.session_id, read_only: data.read_only, expires_at: data.expires_at });
  await showApp().catch((error) => portalEnded(error.message));
}

function portalEnded(message) {
  $("app").hidden = true;
  $("signin").hidden = true;
  $("sign-out").hidden = true;
  $("portal-ended").hidden = false;
  $("portal-message").textContent = message;
  $("portal-ended-title").focus();
}
