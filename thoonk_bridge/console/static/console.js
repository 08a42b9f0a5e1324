// thoonk-bridge console: polls state.json and redraws the tables; replay/discard with the token.
// No framework, no build step. The token stays in this tab (sessionStorage) and goes only in the
// X-Console-Token header of requests to this daemon.
"use strict";
(function () {
  const base = document.body.dataset.base;
  const tokenInput = document.getElementById("token");
  const message = document.getElementById("message");
  const POLL_MS = 2000;
  let dlRoute = null;

  tokenInput.value = sessionStorage.getItem("thoonk-bridge-console-token") || "";
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem("thoonk-bridge-console-token", tokenInput.value);
    poll();
  });

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (tokenInput.value) h["X-Console-Token"] = tokenInput.value;
    return h;
  }

  async function getJSON(path) {
    const response = await fetch(base + path, { headers: headers(), credentials: "same-origin", cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.status + " " + response.statusText);
    return body;
  }

  async function post(path, body) {
    const response = await fetch(base + path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || response.status + " " + response.statusText);
    return answer;
  }

  function say(text, bad) {
    message.textContent = text;
    message.className = bad ? "bad" : "good";
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function when(stamp) {
    return stamp ? new Date(stamp * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
  }

  function lag(v) { return v == null ? "-" : (v * 1000).toFixed(1) + " ms"; }

  function spark(values) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("viewBox", "0 0 120 20");
    svg.setAttribute("width", "120"); svg.setAttribute("height", "20");
    if (values && values.length) {
      const top = Math.max(...values) || 1;
      const step = 120 / Math.max(1, values.length - 1);
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", values.map((v, i) => (i * step).toFixed(1) + "," + (20 - 18 * v / top).toFixed(1)).join(" "));
      svg.appendChild(line);
    }
    return svg;
  }

  function fill(id, rows, draw) {
    const body = document.querySelector("#" + id + " tbody");
    const fresh = document.createElement("tbody");
    rows.forEach((r) => { const tr = document.createElement("tr"); draw(tr, r); fresh.appendChild(tr); });
    body.replaceWith(fresh);
  }

  function render(state) {
    const locked = document.getElementById("locked");
    if (locked) locked.remove();
    document.getElementById("updated").textContent = when(state.generated) + " UTC";
    fill("daemons", state.daemons, (tr, d) => {
      cell(tr, d.instance); cell(tr, d.version); cell(tr, d.host); cell(tr, d.stale ? "STALE" : d.phase);
      cell(tr, when(d.started)); cell(tr, d.heartbeat_age + " s ago");
    });
    fill("routes", state.routes, (tr, r) => {
      tr.dataset.route = r.name;
      cell(tr, r.name, "name"); cell(tr, r.owner);
      const st = cell(tr, r.state, "state");
      const detail = document.createElement("div"); detail.className = "detail"; detail.textContent = r.detail || "";
      st.appendChild(detail);
      const sinks = Object.entries(r.sinks || {}).map(([s, i]) => s + " (" + (i.state || "?") + ")").join(", ");
      cell(tr, (r.source || "") + " \u2192 " + sinks);
      cell(tr, r.delivered, "delivered num"); cell(tr, r.rate, "rate num");
      cell(tr, "").appendChild(spark(r.sparkline));
      cell(tr, lag(r.lag && r.lag.p50) + " / " + lag(r.lag && r.lag.p99), "num");
      cell(tr, r.last_error ? when(r.last_error.at) + " " + r.last_error.reason : "", "error");
      const dl = cell(tr, "", "deadletters num");
      const a = document.createElement("a"); a.href = "#"; a.className = "dl-open"; a.textContent = r.dead_letters || 0;
      dl.appendChild(a);
    });
    fill("plugins", state.plugins, (tr, p) => { cell(tr, p.instance); cell(tr, p.plugin); cell(tr, p.status); cell(tr, p.detail); });
    fill("websub", (state.websub && state.websub.topics) || [], (tr, t) => {
      cell(tr, t.topic); cell(tr, t.subscribers, "num"); cell(tr, t.failing.join(", "));
    });
    fill("xmpp", state.xmpp, (tr, a) => { cell(tr, a.instance); cell(tr, a.account); cell(tr, a.jid); cell(tr, a.state); cell(tr, a.detail); });
  }

  async function poll() {
    try {
      render(await getJSON("/state.json"));
      if (dlRoute) await loadDeadLetters(dlRoute);
    } catch (err) {
      say(String(err.message || err), true);
    }
  }

  async function loadDeadLetters(route) {
    dlRoute = route;
    const panel = document.getElementById("dl-panel");
    panel.hidden = false;
    document.getElementById("dl-route").textContent = route;
    const answer = await getJSON("/deadletters.json?route=" + encodeURIComponent(route));
    fill("deadletters", answer.entries, (tr, e) => {
      tr.dataset.entry = e.entry;
      cell(tr, e.entry); cell(tr, when(e.at)); cell(tr, e.item); cell(tr, e.sink || "-"); cell(tr, e.reason, "error");
      const actions = cell(tr, "");
      for (const [label, action] of [["Replay", "replay"], ["Discard", "discard"]]) {
        const b = document.createElement("button");
        b.textContent = label; b.className = action;
        b.addEventListener("click", () => act(action, { route: route, entries: [e.entry] }));
        actions.appendChild(b);
      }
    });
  }

  async function act(action, body) {
    if (!tokenInput.value) { say(action + " needs the console token", true); return; }
    say(action + "...", false);
    try {
      const answer = await post("/" + action, body);
      if (action === "replay") {
        const skipped = Object.keys(answer.skipped || {}).length;
        say("replayed " + answer.replayed.length + (skipped ? ", skipped " + skipped : "") + " (by " + answer.owner + ")", false);
      } else {
        say("discarded " + answer.discarded.length, false);
      }
      setTimeout(poll, 500);
    } catch (err) {
      say(action + " refused: " + (err.message || err), true);
    }
  }

  document.getElementById("routes").addEventListener("click", (ev) => {
    const link = ev.target.closest("a.dl-open");
    if (!link) return;
    ev.preventDefault();
    loadDeadLetters(link.closest("tr").dataset.route).catch((err) => say(String(err.message || err), true));
  });
  document.getElementById("dl-replay-all").addEventListener("click", () => act("replay", { route: dlRoute, all: true }));
  document.getElementById("dl-discard-all").addEventListener("click", () => act("discard", { route: dlRoute, all: true }));
  document.getElementById("trace-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const feed = document.getElementById("trace-feed").value, id = document.getElementById("trace-id").value;
    try {
      const answer = await getJSON("/trace.json?feed=" + encodeURIComponent(feed) + "&id=" + encodeURIComponent(id));
      fill("trace", answer.path, (tr, r) => { cell(tr, when(r.at)); cell(tr, r.route); cell(tr, r.sink); cell(tr, r.outcome); });
    } catch (err) { say(String(err.message || err), true); }
  });

  setInterval(poll, POLL_MS);
  if (document.getElementById("locked") && tokenInput.value) poll();
})();
