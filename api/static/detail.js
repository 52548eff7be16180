// The webhook detail view (#/webhooks/{id}), its Edit form (#/webhooks/{id}/edit) and one delivery in full
// (#/deliveries/{attempt_id}), on top of settings.js (api, el, state, the shared panels). The charts are inline
// SVG drawn here (no library, no CDN: the page's CSP allows only its own scripts); each outcome has its own
// pattern as well as its colour, every bar has a title, and a text summary says the same for screen readers.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const OUTCOMES = [
  { key: "success", label: "Success", pattern: "p-success" },
  { key: "http_error", label: "HTTP error", pattern: "p-http" },
  { key: "timeout", label: "Timeout", pattern: "p-timeout" },
  { key: "connection_error", label: "Connection error", pattern: "p-conn" },
];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

// ----------------------------------------------------------------------------------------- routing

function showView(name) {
  const list = name === "list";
  for (const id of ["list-title", "list-lead", "list-view"]) $(id).hidden = !list;
  $("detail-view").hidden = name !== "detail";
  $("delivery-view").hidden = name !== "delivery";
  $("event-view").hidden = name !== "event";
  $("log-view").hidden = name !== "log";
  for (const [view, link] of [["list", "nav-webhooks"], ["log", "nav-log"]]) {
    if (name === view) $(link).setAttribute("aria-current", "page");
    else $(link).removeAttribute("aria-current");
  }
  $("webhook-form").hidden = name !== "edit" && $("webhook-form").hidden;
}

function crumbs(...items) {
  const list = $("crumbs");
  list.replaceChildren(el("li", { text: "Settings" }));
  const all = [{ text: "Webhooks", href: "#/" }, ...items];
  all.forEach((item, i) => {
    const last = i === all.length - 1;
    list.append(el("li", last ? { "aria-current": "page" } : {}, last ? item.text : el("a", { href: item.href, text: item.text })));
  });
}

async function route() {
  if ($("app").hidden) return;
  const hash = location.hash || "#/";
  let match;
  try {
    if ((match = hash.match(/^#\/webhooks\/([A-Za-z0-9_-]+)\/edit$/))) return await openEdit(match[1]);
    if ((match = hash.match(/^#\/webhooks\/([A-Za-z0-9_-]+)$/))) return await openDetail(match[1]);
    if ((match = hash.match(/^#\/deliveries\/([A-Za-z0-9_-]+)$/))) return await openDelivery(match[1]);
    if ((match = hash.match(/^#\/events\/([^/]*)$/))) return await openEvent(decodeURIComponent(match[1])); // events.js
    if ((match = hash.match(/^#\/deliveries(?:\?(.*))?$/))) return await openLog(match[1] || ""); // deliverylog.js
  } catch (error) {
    notice(error.status === 404 ? "That webhook or delivery does not exist (or was deleted)." : error.message, true);
    location.hash = "#/";
    return;
  }
  state.detail = null;
  closePanels();
  showView("list");
  crumbs();
  $("app-title").focus();
}

// ----------------------------------------------------------------------------------------- detail

async function openDetail(id) {
  const webhook = await api("GET", `/v1/webhooks/${id}`);
  closePanels();
  state.detail = webhook;
  state.window = state.window || "24h";
  showView("detail");
  crumbs({ text: webhook.name, href: `#/webhooks/${id}` });
  renderHeader(webhook);
  $("reveal-box").hidden = true;
  $("revealed-secret").value = "";
  $("logs-title").textContent = `Deliveries of ${webhook.name}`;
  $("logs-panel").hidden = false;
  $("detail-title").focus();
  await Promise.all([loadStats(), loadLogs(false)]);
}

function renderHeader(webhook) {
  $("detail-title").textContent = webhook.name;
  $("detail-url").textContent = webhook.url;
  $("detail-active").checked = webhook.active;
  $("detail-active").setAttribute("aria-label", `Active: ${webhook.name}`);
  const since = new Date(webhook.active ? webhook.status_changed_at : webhook.disabled_at || webhook.updated_at);
  const status = $("detail-status");
  status.replaceChildren(statusBadge(webhook.status));
  if (!webhook.active) status.append(" ", el("span", { class: "badge test", text: "Off" }), ` ${offReason(webhook)}`);
  else status.append(` since ${since.toLocaleString()}`);
  $("detail-events").textContent = `Subscribed to: ${webhook.events.join(", ")}`
    + (webhook.filter ? `, only when ${webhook.filter}` : "");
  renderPublicKey(webhook);
}

// Only public keys ever reach the page: the private key stays sealed on the server.
function renderPublicKey(webhook) {
  const on = Boolean(webhook.asymmetric_signing && webhook.public_key);
  $("public-key-box").hidden = !on;
  $("detail-rotate-key").hidden = !on;
  $("public-key").value = on ? webhook.public_key : "";
  $("public-key-status").textContent = "";
  const previous = on && webhook.previous_public_key;
  $("previous-public-key-row").hidden = !previous;
  $("previous-public-key-hint").hidden = !previous;
  $("previous-public-key").value = previous ? webhook.previous_public_key : "";
  $("previous-public-key-hint").textContent = previous
    ? `Also signs until ${new Date(webhook.previous_public_key_expires_at).toLocaleString()}: trust both keys until then.`
    : "";
}

async function rotateSigningKey() {
  const webhook = state.detail;
  if (!window.confirm(`Rotate the Ed25519 key of ${webhook.name}? The old key keeps signing for a while.`)) return;
  try {
    const rotated = await api("POST", `/v1/webhooks/${webhook.id}/rotate-signing-key`);
    state.detail = rotated;
    renderHeader(rotated);
    notice(`New public key for ${rotated.name}: add it to your receiver; the previous key keeps signing for a while.`);
    $("public-key").focus();
  } catch (error) {
    notice(`Could not rotate the signing key: ${error.message}`, true);
  }
}

async function copyPublicKey() {
  try {
    await navigator.clipboard.writeText($("public-key").value);
    $("public-key-status").textContent = "Copied to the clipboard.";
  } catch {
    $("public-key").select();
    $("public-key-status").textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
}

async function loadStats() {
  const webhook = state.detail;
  const stats = await api("GET", `/v1/webhooks/${webhook.id}/stats?window=${state.window}`);
  if (state.detail !== webhook) return;
  for (const button of document.querySelectorAll("#health button.window")) {
    button.setAttribute("aria-pressed", String(button.dataset.window === stats.window));
  }
  renderSummary(stats);
  renderAttempts(stats);
  renderLatency(stats);
}

const pct = (rate) => (rate === null ? "—" : `${(rate * 100).toFixed(1)}%`);
const ms = (value) => (value === null ? "—" : `${value} ms`);
const hourLabel = (iso, window) =>
  window === "24h" ? `${iso.slice(11, 16)} UTC` : `${iso.slice(5, 10)} ${iso.slice(11, 16)} UTC`;

function renderSummary(stats) {
  const s = stats.summary;
  const facts = [
    ["Success rate", pct(s.success_rate)],
    ["Response time p50", ms(s.p50_ms)],
    ["Response time p95", ms(s.p95_ms)],
    ["Deliveries", String(s.deliveries)],
    ["Failures", String(s.failures)],
    ["Dead letters", String(s.dead_letters)],
  ];
  $("health-summary").replaceChildren(
    ...facts.map(([name, value]) => el("div", {}, el("dt", { text: name }), el("dd", { text: value }))),
  );
  const span = stats.window === "24h" ? "the last 24 hours" : "the last 7 days";
  if (!s.attempts) {
    $("health-text").textContent = `No deliveries in ${span}.`;
    return;
  }
  const worst = stats.buckets.reduce((a, b) => (failures(b) > failures(a) ? b : a));
  const sentence =
    `In ${span}: ${s.attempts} attempts, ${s.successes} succeeded (${pct(s.success_rate)}), ${s.failures} failed, ` +
    `${s.dead_letters} dead-lettered; median response ${ms(s.p50_ms)}, 95th percentile ${ms(s.p95_ms)}.` +
    (failures(worst) ? ` Most failures: ${failures(worst)} in the hour from ${hourLabel(worst.start, stats.window)}.` : "");
  $("health-text").textContent = sentence;
}

const failures = (b) => b.http_error + b.timeout + b.connection_error;

function patterns() {
  const defs = svg("defs");
  const add = (id, color, ...marks) => {
    defs.append(svg("pattern", { id, width: 6, height: 6, patternUnits: "userSpaceOnUse" },
      svg("rect", { width: 6, height: 6, fill: "#fff" }), ...marks.map((m) => (m.setAttribute("stroke", color), m.setAttribute("fill", color), m))));
  };
  add("p-success", "#1a7f37", svg("rect", { width: 6, height: 6 }));
  add("p-http", "#cf222e", svg("path", { d: "M0,6 L6,0", "stroke-width": 2, fill: "none" }));
  add("p-timeout", "#bc4c00", svg("circle", { cx: 3, cy: 3, r: 1.4 }));
  add("p-conn", "#8250df", svg("path", { d: "M0,3 L6,3 M3,0 L3,6", "stroke-width": 1.5, fill: "none" }));
  return defs;
}

function renderAttempts(stats) {
  const width = 960, height = 180, left = 40, bottom = 22, top = 8;
  const buckets = stats.buckets;
  const max = Math.max(1, ...buckets.map((b) => b.success + failures(b)));
  const slot = (width - left) / buckets.length;
  const scale = (height - top - bottom) / max;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "attempts-caption", id: "attempts-svg",
    class: "chart-svg",
  });
  chart.append(patterns());
  chart.append(svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, stroke: "#8c959f" }));
  chart.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "axis" }, String(max)));
  chart.append(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "axis" }, "0"));
  buckets.forEach((bucket, i) => {
    const x = left + i * slot;
    const group = svg("g", { class: "bar", "data-start": bucket.start });
    let y = height - bottom;
    const parts = [];
    for (const outcome of OUTCOMES) {
      const count = bucket[outcome.key];
      group.setAttribute(`data-${outcome.key.replace("_", "-")}`, count);
      if (!count) continue;
      const h = count * scale;
      y -= h;
      group.append(svg("rect", {
        x: x + slot * 0.1, y, width: Math.max(1, slot * 0.8), height: h, fill: `url(#${outcome.pattern})`,
        stroke: "#57606a", "stroke-width": 0.5, class: outcome.key,
      }));
      parts.push(`${count} ${outcome.label.toLowerCase()}`);
    }
    group.prepend(svg("title", {}, `${hourLabel(bucket.start, stats.window)}: ${parts.join(", ") || "no attempts"}`));
    chart.append(group);
    const every = stats.window === "24h" ? 3 : 24;
    if (i % every === 0) {
      chart.append(svg("text", { x: x + slot / 2, y: height - 6, "text-anchor": "middle", class: "axis" },
        stats.window === "24h" ? bucket.start.slice(11, 16) : bucket.start.slice(5, 10)));
    }
  });
  $("attempts-chart").replaceChildren(chart);
  const legend = $("attempts-legend");
  legend.replaceChildren(
    ...OUTCOMES.map((o) => {
      const swatch = svg("svg", { width: 14, height: 14, viewBox: "0 0 14 14" },
        svg("rect", { width: 14, height: 14, fill: `url(#${o.pattern})`, stroke: "#57606a" }));
      return el("li", {}, swatch, ` ${o.label}`);
    }),
  );
}

function renderLatency(stats) {
  const width = 960, height = 140, left = 72, bottom = 22, top = 8;
  const buckets = stats.buckets;
  const max = Math.max(1, ...buckets.map((b) => b.p95_ms || 0));
  const slot = (width - left) / buckets.length;
  const yOf = (v) => height - bottom - (v / max) * (height - top - bottom);
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "latency-caption", id: "latency-svg",
    class: "chart-svg",
  });
  chart.append(svg("line", { x1: left, x2: width, y1: height - bottom, y2: height - bottom, stroke: "#8c959f" }));
  chart.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "axis" }, `${max} ms`));
  chart.append(svg("text", { x: left - 4, y: height - bottom, "text-anchor": "end", class: "axis" }, "0"));
  for (const [key, dash, label] of [["p50_ms", "", "median"], ["p95_ms", "6 4", "p95"]]) {
    let segment = [];
    const flush = () => {
      if (segment.length) chart.append(svg("polyline", {
        points: segment.join(" "), fill: "none", stroke: key === "p50_ms" ? "#0b5cad" : "#bc4c00", "stroke-width": 2,
        "stroke-dasharray": dash, class: key,
      }));
      segment = [];
    };
    buckets.forEach((b, i) => {
      if (b[key] === null) return flush();
      const x = left + i * slot + slot / 2;
      segment.push(`${x.toFixed(1)},${yOf(b[key]).toFixed(1)}`);
      chart.append(svg("circle", { cx: x, cy: yOf(b[key]), r: 2.5, fill: key === "p50_ms" ? "#0b5cad" : "#bc4c00" },
        svg("title", {}, `${hourLabel(b.start, stats.window)}: ${label} ${b[key]} ms`)));
    });
    flush();
  }
  chart.append(svg("text", { x: width - 4, y: top + 8, "text-anchor": "end", class: "axis" }, "— median   - - p95"));
  $("latency-chart").replaceChildren(chart);
}

async function setDetailActive(checkbox) {
  const webhook = state.detail;
  try {
    const updated = await api("PATCH", `/v1/webhooks/${webhook.id}`, { active: checkbox.checked });
    state.detail = updated;
    renderHeader(updated);
    notice(`${updated.name} is now ${updated.active ? "active" : "paused: nothing is sent until you switch it on"}.`);
    loadWebhooks();
  } catch (error) {
    checkbox.checked = !checkbox.checked;
    notice(`Could not change ${webhook.name}: ${error.message}`, true);
  }
}

async function reveal() {
  try {
    const answer = await api("GET", `/v1/webhooks/${state.detail.id}/secret`);
    $("revealed-secret").value = answer.secret;
    $("revealed-status").textContent = answer.previous_secret_expires_at
      ? `The previous secret also signs until ${new Date(answer.previous_secret_expires_at).toLocaleString()}.`
      : "";
    $("reveal-box").hidden = false;
    $("revealed-secret").focus();
    $("revealed-secret").select();
  } catch (error) {
    notice(`Could not reveal the secret: ${error.message}`, true);
  }
}

async function copyRevealed() {
  try {
    await navigator.clipboard.writeText($("revealed-secret").value);
    $("revealed-status").textContent = "Copied to the clipboard.";
  } catch {
    $("revealed-secret").select();
    $("revealed-status").textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
}

function hideRevealed() {
  $("revealed-secret").value = "";
  $("reveal-box").hidden = true;
  $("detail-reveal").focus();
}

// ----------------------------------------------------------------------------------------- edit

async function openEdit(id) {
  const webhook = state.detail && state.detail.id === id ? state.detail : await api("GET", `/v1/webhooks/${id}`);
  closePanels();
  notice("");
  state.detail = webhook;
  state.editing = webhook;
  showView("edit");
  crumbs({ text: webhook.name, href: `#/webhooks/${id}` }, { text: "Edit", href: location.hash });
  $("webhook-form").reset();
  clearFormErrors();
  $("form-title").textContent = `Edit ${webhook.name}`;
  $("form-submit").textContent = "Save changes";
  $("form-hint").hidden = false;
  $("wh-name").value = webhook.name;
  $("wh-url").value = webhook.url;
  for (const box of $("wh-events").querySelectorAll("input")) box.checked = webhook.events.includes(box.value);
  $("wh-rate").value = webhook.rate_limit_per_s === null ? "" : String(webhook.rate_limit_per_s);
  $("wh-fifo").checked = webhook.ordering === "fifo";
  $("wh-ed25519").checked = webhook.asymmetric_signing;
  $("wh-redrive").checked = webhook.redrive_on_recovery;
  const names = Object.keys(webhook.headers);
  $("wh-headers-keep").textContent = names.length
    ? ` Current: ${names.join(", ")} (values hidden). Leave empty to keep them; enter new lines to replace them all.`
    : "";
  $("wh-filter").value = webhook.filter || "";
  $("filter-preview-box").hidden = false;
  $("filter-preview-result").textContent = "";
  $("webhook-form").hidden = false;
  $("wh-name").focus();
}

async function saveEdit() {
  const webhook = state.editing;
  const body = {
    name: $("wh-name").value,
    url: $("wh-url").value.trim(),
    events: [...$("wh-events").querySelectorAll("input:checked")].map((box) => box.value),
  };
  const rate = $("wh-rate").value.trim();
  if (rate) body.rate_limit_per_s = Number(rate);
  const problems = validateForm(body);
  if (Object.keys(problems).length) {
    for (const [field, message] of Object.entries(problems)) setFieldError(FORM_FIELDS[field], message);
    focusField(Object.keys(problems)[0]);
    return;
  }
  // Only what changed is sent, so a field the form cannot show in full (header values) is never overwritten.
  const changes = {};
  if (body.name !== webhook.name) changes.name = body.name;
  if (body.url !== webhook.url) changes.url = body.url;
  if (body.events.slice().sort().join() !== webhook.events.slice().sort().join()) changes.events = body.events;
  const wantedRate = rate ? body.rate_limit_per_s : null;
  if (wantedRate !== webhook.rate_limit_per_s) changes.rate_limit_per_s = wantedRate === null ? 0 : wantedRate;
  const ordering = $("wh-fifo").checked ? "fifo" : "unordered";
  if (ordering !== webhook.ordering) changes.ordering = ordering;
  if ($("wh-ed25519").checked !== webhook.asymmetric_signing) changes.asymmetric_signing = $("wh-ed25519").checked;
  const redrive = $("wh-redrive").checked;
  if (redrive !== webhook.redrive_on_recovery) changes.redrive_on_recovery = redrive;
  const headers = parseHeaders($("wh-headers").value);
  if (Object.keys(headers).length) changes.headers = headers;
  const filter = $("wh-filter").value.trim();
  if (filter !== (webhook.filter || "")) changes.filter = filter; // "" removes it
  try {
    const updated = Object.keys(changes).length ? await api("PATCH", `/v1/webhooks/${webhook.id}`, changes) : webhook;
    state.editing = null;
    $("webhook-form").hidden = true;
    notice(Object.keys(changes).length ? `Saved: ${Object.keys(changes).join(", ").replaceAll("_", " ")}.` : "Nothing changed.");
    await loadWebhooks();
    state.detail = updated;
    location.hash = `#/webhooks/${webhook.id}`;
  } catch (error) {
    showApiError(error);
  }
}

// ----------------------------------------------------------------------------------------- one delivery

const OUTCOME_TEXT = {
  success: "Delivered",
  http_error: "HTTP error",
  timeout: "Timed out",
  connection_error: "Connection error",
  tls_error: "TLS error",
  blocked: "Blocked address",
  dropped: "Dropped",
};

function outcomeText(row) {
  const what = row.status_code !== null ? `HTTP ${row.status_code}` : row.error || row.outcome;
  return `${OUTCOME_TEXT[row.outcome] || row.outcome} (${what})`;
}

async function openDelivery(attemptId) {
  const detail = await api("GET", `/v1/deliveries/${attemptId}`);
  closePanels();
  notice("");
  state.delivery = detail;
  const row = detail.delivery;
  const webhook = state.webhooks.find((w) => w.id === detail.webhook_id);
  const name = webhook ? webhook.name : detail.webhook_id;
  showView("delivery");
  crumbs({ text: name, href: `#/webhooks/${detail.webhook_id}` }, { text: row.event_id, href: location.hash });
  $("delivery-back").href = `#/webhooks/${detail.webhook_id}`;
  $("delivery-back").textContent = `← ${name}`;
  $("delivery-title").textContent = `${row.event_type} · attempt ${row.attempt}`;
  $("delivery-summary").replaceChildren(
    el("span", { class: `badge ${row.outcome === "success" ? "success" : "failure"}`, text: outcomeText(row) }),
    ` at ${formatTime(row.attempted_at)} UTC` + (row.response_ms === null ? "" : `, answered in ${row.response_ms} ms`) +
      ` · event ${row.event_id} · then: ${row.next_step}`,
  );
  $("delivery-event-link").href = `#/events/${row.event_id}`; // events.js
  $("delivery-event-link").textContent = `Every webhook event ${row.event_id} went to`;
  $("delivery-timeline").replaceChildren(
    ...detail.timeline.map((a) =>
      el(
        "li",
        a.attempt_id === row.attempt_id ? { "aria-current": "true", class: "current" } : {},
        el("a", { href: `#/deliveries/${a.attempt_id}`, text: `Attempt ${a.attempt}` }),
        ` · ${formatTime(a.attempted_at)} UTC · ${outcomeText(a)}` + (a.response_ms === null ? "" : ` · ${a.response_ms} ms`) +
          (a.test ? " · test" : "") + (a.replay ? " · replay" : ""),
      ),
    ),
  );
  $("request-line").textContent = `${detail.request.method} ${detail.request.url}`;
  $("request-headers").querySelector("tbody").replaceChildren(
    ...Object.entries(detail.request.headers).map(([name, value]) =>
      el("tr", {}, el("th", { scope: "row", class: "mono", text: name }), el("td", { class: "mono", text: value })),
    ),
  );
  const raw = detail.request.body;
  let pretty = raw;
  try {
    pretty = raw === null ? "" : JSON.stringify(JSON.parse(raw), null, 2);
  } catch {
    // shown raw
  }
  $("request-body-pretty").textContent = raw === null ? "The event's payload is past the retention." : pretty;
  $("request-body-raw").textContent = raw === null ? "" : raw;
  const response = detail.response;
  const facts = [
    ["Status", response.status_code === null ? response.error || "no answer" : String(response.status_code)],
    ["Outcome", OUTCOME_TEXT[row.outcome] || row.outcome],
    ["Response time", ms(response.response_ms)],
    ["Sent at", `${formatTime(row.attempted_at)} UTC`],
  ];
  $("response-facts").replaceChildren(
    ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))),
  );
  $("response-body").textContent = response.body_excerpt || "(empty body)";
  $("delivery-redeliver").setAttribute("aria-label", `Redeliver event ${row.event_id}`);
  $("delivery-title").focus();
}

// ----------------------------------------------------------------------------------------- wiring

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", () => route());
  $("detail-active").addEventListener("change", (event) => setDetailActive(event.target));
  $("detail-edit").addEventListener("click", () => (location.hash = `#/webhooks/${state.detail.id}/edit`));
  $("detail-test").addEventListener("click", () => openTest(state.detail));
  $("detail-reveal").addEventListener("click", reveal);
  $("copy-revealed").addEventListener("click", copyRevealed);
  $("hide-revealed").addEventListener("click", hideRevealed);
  $("detail-rotate").addEventListener("click", async () => {
    await rotate(state.detail);
    hideRevealedQuietly();
  });
  $("detail-delete").addEventListener("click", () => remove(state.detail));
  $("detail-rotate-key").addEventListener("click", rotateSigningKey);
  $("copy-public-key").addEventListener("click", copyPublicKey);
  $("delivery-redeliver").addEventListener("click", () => redeliver(state.delivery.delivery));
  for (const button of document.querySelectorAll("#health button.window")) {
    button.addEventListener("click", () => {
      state.window = button.dataset.window;
      loadStats().catch((error) => notice(`Could not load the health: ${error.message}`, true));
    });
  }
});

function hideRevealedQuietly() {
  $("revealed-secret").value = "";
  $("reveal-box").hidden = true;
}
