// The operator page. Everything it shows comes from the admin API, asked with the operator's
// token, which lives in this closure only: never in localStorage, a cookie or a URL. Every
// value is rendered with textContent; nothing from the API is ever parsed as HTML.
"use strict";

(() => {
  const STATS_EVERY_MS = 3000;
  let token = null;
  let statsTimer = null;

  const $ = (selector) => document.querySelector(selector);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  class ApiError extends Error {
    constructor(status, body) {
      // Every refusal is problem details (sms_gateway/problems.py): a sentence in `detail`.
      const detail = body && typeof body.detail === "string" ? body.detail : null;
      super(detail ? `${detail} (HTTP ${status})` : `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const asked = token;
    const init = {
      method,
      headers: { Authorization: `Bearer ${asked}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const payload = await response.json().catch(() => null);
    if (token !== asked) throw new Error("disconnected meanwhile");
    if (response.status === 401) disconnect("The token was refused (401). Enter a valid one.");
    if (!response.ok) throw new ApiError(response.status, payload);
    return payload;
  }

  // ------------------------------------------------------------ connection

  function say(text) {
    $("#connection").textContent = text;
  }

  async function connect(event) {
    event.preventDefault();
    const field = $("#token");
    token = field.value.trim();
    field.value = "";
    if (!token) return;
    say("Connecting…");
    try {
      await refreshStats();
      await loadSettings();
    } catch (error) {
      if (token) say(`Could not load: ${error.message}`);
      return;
    }
    $("#panels").hidden = false;
    $("#disconnect").hidden = false;
    say(`Connected. Stats refresh every ${STATS_EVERY_MS / 1000} s.`);
    clearInterval(statsTimer);
    statsTimer = setInterval(() => {
      refreshStats().catch((error) => {
        if (token) say(`Stats not refreshed: ${error.message}`);
      });
    }, STATS_EVERY_MS);
  }

  function disconnect(reason) {
    token = null;
    clearInterval(statsTimer);
    statsTimer = null;
    $("#panels").hidden = true;
    $("#disconnect").hidden = true;
    for (const holder of ["#by-status tbody", "#flow", "#settings tbody", "#sms-detail"]) {
      $(holder).replaceChildren();
    }
    $("#stats-at").textContent = "";
    $("#sms-message").textContent = "";
    say(reason);
  }

  // ------------------------------------------------------------ stats

  const count = (n) => Number(n).toLocaleString("en");
  const rate = (perSecond) => `${perSecond.toFixed(perSecond < 10 ? 2 : 0)} SMS/s`;

  function age(seconds) {
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  function statusRow(label, n, className) {
    const row = element("tr", null, className);
    const head = element("th", label);
    head.scope = "row";
    row.append(head, element("td", count(n), "number"));
    return row;
  }

  async function refreshStats() {
    const stats = await api("GET", "/stats");
    $("#stats-at").textContent = `at ${new Date(stats.at).toLocaleTimeString("en-GB")}`;
    const rows = Object.entries(stats.by_status).map(([status, n]) => statusRow(status, n));
    rows.push(statusRow("total judged", stats.total_judged, "total"));
    $("#by-status tbody").replaceChildren(...rows);

    const backlog = stats.backlog;
    const span = `over the last ${stats.throughput.window_seconds} s`;
    const facts = [
      ["Backlog after checkpoint",
        `${backlog.after_checkpoint_exact ? "" : "at least "}${count(backlog.after_checkpoint)}`],
      ["Pending (requeued)", count(backlog.pending)],
      ["Oldest unprocessed", backlog.oldest_unprocessed_age_seconds === null
        ? "none waiting" : `${age(backlog.oldest_unprocessed_age_seconds)} old`],
      ["Processed", `${rate(stats.throughput.processed_per_second)} ${span}`],
      ["Received", `${rate(stats.throughput.received_per_second)} ${span}`],
      ["Checkpoint", stats.checkpoint],
    ];
    $("#flow").replaceChildren(
      ...facts.flatMap(([term, value]) => [element("dt", term), element("dd", value)]));
  }

  // ------------------------------------------------------------ settings

  // What the edit box starts with: text as it is, anything else as JSON (see `typed`).
  const editable = (value) => (typeof value === "string" ? value : JSON.stringify(value));

  // A key whose value is text takes the text as typed; any other takes JSON. Text that is not
  // JSON goes as a string all the same: the API is the one judge, and names the rule it breaks.
  function typed(setting, text) {
    if (typeof setting.default === "string") return text;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  async function loadSettings() {
    const settings = await api("GET", "/settings");
    $("#settings tbody").replaceChildren(...settings.map(settingRow));
  }

  function settingRow(setting) {
    const row = element("tr", null, setting.invalid ? "invalid" : "");
    row.dataset.key = setting.key;
    const key = element("th", setting.key);
    key.scope = "row";
    const value = element("td");
    // As JSON, so that a string of spaces or an empty one is visible too.
    value.append(element("span", JSON.stringify(setting.value), "value"));
    if (setting.invalid) {
      value.append(element("div",
        `Invalid stored value: ${setting.invalid}. The services keep their last good one.`,
        "flag"));
    }
    const change = element("td");
    change.append(setting.read_only ? element("span", "read-only", "muted") : editForm(setting));
    row.append(key, value, element("td", setting.rule), element("td", setting.meaning), change);
    return row;
  }

  function editForm(setting) {
    const form = element("form", null, "edit");
    const input = element("input");
    input.value = editable(setting.value);
    input.spellcheck = false;
    input.setAttribute("aria-label", `New value for ${setting.key}`);
    const save = element("button", "Save");
    save.type = "submit";
    save.setAttribute("aria-label", `Save ${setting.key}`);
    const outcome = element("p", null, "outcome");
    outcome.setAttribute("role", "status");
    outcome.setAttribute("aria-live", "polite");
    form.append(input, save, outcome);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveSetting(setting, input.value, form);
    });
    return form;
  }

  async function saveSetting(setting, text, form) {
    const outcome = form.querySelector(".outcome");
    outcome.className = "outcome";
    outcome.textContent = "Saving…";
    let change;
    try {
      change = await api("PUT", `/settings/${encodeURIComponent(setting.key)}`,
        { value: typed(setting, text) });
    } catch (error) {
      outcome.className = "outcome refused";
      outcome.textContent = `Refused: ${error.message}`;
      return;
    }
    const fresh = settingRow(change.setting);
    form.closest("tr").replaceWith(fresh);
    const freshOutcome = fresh.querySelector(".outcome");
    freshOutcome.className = "outcome saved";
    freshOutcome.textContent = change.changed
      ? `Saved by ${change.changed_by}.` : "Unchanged: that is the stored value.";
    fresh.querySelector("input").focus();
  }

  // ------------------------------------------------------------ one SMS

  function smsView(sms) {
    const processing = sms.processing_ms === null ? "—" : `${sms.processing_ms.toFixed(1)} ms`;
    const forwarded = sms.out_sms
      ? `yes (${sms.out_sms.validation_status ?? "no status"})` : "no";
    const facts = [
      ["uuid", sms.uuid],
      ["Overall status", sms.overall_status],
      ["Failed at check", sms.failed_at_check ?? "—"],
      ["Sender", sms.input.sender_number],
      ["Message", sms.input.sms_message],
      ["Received", sms.input.received_timestamp],
      ["Source", sms.input.source],
      ["Retries", sms.retry_count ?? "—"],
      ["Processing", processing],
      ["Forwarded to out_sms", forwarded],
      ["Trace id", sms.trace_id],
    ];
    const list = element("dl");
    list.append(...facts.flatMap(([term, value]) => [element("dt", term), element("dd", value)]));
    if (sms.checks.length === 0) {
      return [list, element("p", "Not judged yet: no check results.", "muted")];
    }
    const table = element("table", null, "checks");
    table.append(element("caption", "Check results"));
    const head = element("thead");
    const headRow = element("tr");
    for (const title of ["Check", "Code", "Result"]) {
      const cell = element("th", title);
      cell.scope = "col";
      headRow.append(cell);
    }
    head.append(headRow);
    const body = element("tbody");
    for (const check of sms.checks) {
      const row = element("tr");
      const name = element("th", check.name);
      name.scope = "row";
      row.append(name, element("td", check.code, "number"),
        element("td", check.result, `result-${check.result.replace(/\W+/g, "-")}`));
      body.append(row);
    }
    table.append(head, body);
    return [list, table];
  }

  async function lookUp(event) {
    event.preventDefault();
    const uuid = $("#sms-uuid").value.trim();
    const message = $("#sms-message");
    const detail = $("#sms-detail");
    detail.replaceChildren();
    message.className = "";
    message.textContent = "Looking up…";
    try {
      const sms = await api("GET", `/sms/${encodeURIComponent(uuid)}`);
      message.textContent = "";
      detail.replaceChildren(...smsView(sms));
    } catch (error) {
      message.className = "error";
      message.textContent = error.status === 404 ? `No SMS has the uuid ${uuid}.`
        : error.status === 422 ? `Not a uuid: ${uuid}` : `Could not look up: ${error.message}`;
    }
  }

  // ------------------------------------------------------------ wiring

  $("#connect").addEventListener("submit", connect);
  $("#disconnect").addEventListener("click", () => disconnect("Token forgotten. Not connected."));
  $("#reload-settings").addEventListener("click", () => {
    loadSettings().catch((error) => say(`Settings not reloaded: ${error.message}`));
  });
  $("#sms-lookup").addEventListener("submit", lookUp);
})();
