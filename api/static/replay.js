// Replay on the Settings -> Webhooks page, kept apart from settings.js: it adds a "Replay" button to each
// webhook row, counts first (a dry run), sends only after the user confirms that count, then shows the
// progress read from the API. Server values are written with textContent only.
"use strict";

(() => {
  const POLL_MS = 2000; // progress reads the log; every 2 s is enough for a person watching
  const $ = (id) => document.getElementById(id);
  const replay = { webhook: null, request: null, pollTimer: null };

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${credential.get()}` }; // settings.js
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new Error("The server could not be reached. Check your connection.");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error((data.error && data.error.message) || `request failed (${response.status})`);
      error.field = data.error && data.error.field;
      throw error;
    }
    return data;
  }

  // <input type="datetime-local"> holds a wall-clock time without a zone; the form says UTC, so it is UTC.
  const asUtc = (value) => (value ? `${value.length === 16 ? `${value}:00` : value}Z` : null);
  const shown = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "");

  function say(...nodes) {
    $("replay-result").replaceChildren(...nodes);
  }

  function stopPolling() {
    if (replay.pollTimer) clearTimeout(replay.pollTimer);
    replay.pollTimer = null;
  }

  function openReplay(webhookId, name) {
    for (const id of ["test-panel", "webhook-form"]) $(id).hidden = true;
    stopPolling();
    replay.webhook = { id: webhookId, name };
    replay.request = null;
    $("replay-title").textContent = `Replay events to ${name}`;
    $("replay-form").reset();
    const dayAgo = new Date(Date.now() - 24 * 3600 * 1000).toISOString().slice(0, 16);
    $("replay-since").value = dayAgo;
    say();
    $("replay-panel").hidden = false;
    $("replay-title").focus();
  }

  function closeReplay() {
    stopPolling();
    $("replay-panel").hidden = true;
    replay.webhook = null;
  }

  function request() {
    const body = { since: asUtc($("replay-since").value), only_failed: $("replay-only-failed").checked };
    const until = asUtc($("replay-until").value);
    if (until) body.until = until;
    if ($("replay-type").value) body.event_types = [$("replay-type").value];
    return body;
  }

  async function count(event) {
    event.preventDefault();
    stopPolling();
    if (!$("replay-since").value) {
      say(el("p", { class: "field-error", text: "Enter the time to replay from." }));
      return $("replay-since").focus();
    }
    const body = request();
    say(el("p", { text: "Counting…" }));
    try {
      const preview = await call("POST", `/v1/webhooks/${replay.webhook.id}/replay`, { ...body, dry_run: true });
      replay.request = body;
      if (preview.count === 0) {
        say(el("p", { id: "replay-count", text: "No events in this range: nothing to replay." }));
        return;
      }
      const range = `from ${shown(preview.first.first_attempted_at)} to ${shown(preview.last.first_attempted_at)}`;
      say(
        el("p", { id: "replay-count", class: "summary", text: `${preview.count} events would be sent again, ${range}.` }),
        el(
          "div",
          { class: "actions" },
          el("button", {
            type: "button",
            class: "primary",
            text: `Replay ${preview.count} events`,
            onclick: () => confirmReplay(preview.count),
          }),
          el("button", { type: "button", text: "Cancel", onclick: () => say() }),
        ),
      );
      $("replay-result").querySelector("button.primary").focus();
    } catch (error) {
      say(el("p", { class: "field-error", text: error.message }));
    }
  }

  async function confirmReplay(expected) {
    say(el("p", { text: "Starting…" }));
    try {
      const started = await call("POST", `/v1/webhooks/${replay.webhook.id}/replay`, replay.request);
      if (started.total !== expected) {
        say(el("p", { text: `The range now holds ${started.total} events (counted ${expected}); replaying those.` }));
      }
      showProgress(started);
    } catch (error) {
      say(el("p", { class: "field-error", text: error.message }));
    }
  }

  function showProgress(progress) {
    const finished = progress.state !== "running" && progress.delivered + progress.dead >= progress.total;
    const line =
      `Replay ${progress.id}: ${progress.queued} of ${progress.total} queued, ` +
      `${progress.delivered} delivered, ${progress.failed} failed` +
      (progress.dead ? ` (${progress.dead} dead-lettered)` : "") +
      (progress.state === "failed" ? ` — stopped: ${progress.error}` : "") +
      (finished ? ". Done." : "");
    const box = $("replay-progress") || el("p", { id: "replay-progress", role: "status", "aria-live": "polite" });
    box.textContent = line;
    if (!box.isConnected) say(box);
    if (!finished && progress.state !== "failed" && replay.webhook) {
      replay.pollTimer = setTimeout(() => poll(progress.id), POLL_MS);
    }
  }

  async function poll(replayId) {
    if (!replay.webhook) return;
    try {
      showProgress(await call("GET", `/v1/webhooks/${replay.webhook.id}/replays/${replayId}`));
    } catch (error) {
      say(el("p", { class: "field-error", text: `Could not read the progress: ${error.message}` }));
    }
  }

  function addButtons() {
    for (const row of document.querySelectorAll("#webhooks tbody tr[data-webhook-id]")) {
      const actions = row.querySelector(".row-actions");
      if (!actions || actions.querySelector(".replay-action")) continue;
      const name = row.querySelector("th").textContent;
      actions.append(
        el("button", {
          type: "button",
          class: "replay-action",
          text: "Replay",
          "aria-label": `Replay events to ${name}`,
          onclick: () => openReplay(row.dataset.webhookId, name),
        }),
      );
    }
  }

  async function fillTypes() {
    try {
      const catalog = await call("GET", "/v1/event-types");
      for (const entry of catalog.data) $("replay-type").append(el("option", { value: entry.type, text: entry.type }));
    } catch {
      // the catalog is public and static; without it the replay covers all types
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    new MutationObserver(addButtons).observe($("webhooks").querySelector("tbody"), { childList: true });
    $("replay-form").addEventListener("submit", count);
    $("replay-close").addEventListener("click", closeReplay);
    fillTypes();
  });
})();
