/// The web UI's script: a single-page application over `/api` (hash routes, basic auth kept in sessionStorage,
/// server-side paging so that 10,000 queues stay fast, SVG charts of the overview's history).
enum UIScript {
  static let javascript = #"""
    "use strict";
    const $ = (selector, root = document) => root.querySelector(selector);
    const view = () => $("#view");
    let refreshTimer = null;

    function esc(value) {
      return String(value ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
    }
    const enc = encodeURIComponent;
    function fmt(n) { return n === undefined || n === null ? "" : Number(n).toLocaleString("en-US", {maximumFractionDigits: 1}); }
    function rate(obj, key) { return obj && obj[key + "_details"] ? fmt(obj[key + "_details"].rate) + "/s" : ""; }
    function bytes(n) { if (!n) return "0 B"; const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < 4) { n /= 1024; i++; } return n.toFixed(i ? 1 : 0) + " " + u[i]; }

    // --- Credentials and requests
    function credentials() { return sessionStorage.getItem("warren-auth"); }
    async function api(method, path, body, headers = {}) {
      const init = {method, headers: {"Authorization": "Basic " + credentials(), "X-Requested-With": "XMLHttpRequest", ...headers}};
      if (body !== undefined) { init.body = typeof body === "string" ? body : JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
      const response = await fetch("/api" + path, init);
      if (response.status === 401 && path !== "/whoami") { showLogin("Your session is not authorized: log in again."); throw new Error("not authorized"); }
      const text = await response.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
      if (!response.ok) { const reason = data && data.reason ? data.reason : response.statusText; const error = new Error(reason); error.status = response.status; throw error; }
      return {data, response};
    }
    async function get(path) { return (await api("GET", path)).data; }

    function flash(text, bad = false) {
      const box = $("#message"); box.textContent = text; box.className = "message" + (bad ? " bad" : ""); box.hidden = false;
      clearTimeout(flash.timer); flash.timer = setTimeout(() => { box.hidden = true; }, 6000);
    }
    async function act(what, action) {
      try { await action(); flash(what); await route(); } catch (e) { if (e.message !== "not authorized") flash(e.message, true); }
    }

    // --- Login
    function showLogin(error = "") {
      stopRefresh();
      $("#login").hidden = false; $("#nav").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
      view().innerHTML = ""; $("#login-error").textContent = error;
    }
    $("#login").addEventListener("submit", async event => {
      event.preventDefault();
      const user = $("#login-user").value, password = $("#login-password").value;
      sessionStorage.setItem("warren-auth", btoa(unescape(enc(user + ":" + password))));
      try {
        const who = await get("/whoami");
        $("#login").hidden = true; start(who);
      } catch (e) { sessionStorage.removeItem("warren-auth"); $("#login-error").textContent = e.status === 401 ? "Login failed: " + e.message : e.message; }
    });
    $("#logout").addEventListener("click", () => { sessionStorage.removeItem("warren-auth"); showLogin(); });

    function start(who) {
      $("#nav").hidden = false; $("#logout").hidden = false;
      $("#who").textContent = who.name + (who.tags.length ? " (" + who.tags.join(", ") + ")" : "");
      if (!location.hash) location.hash = "#/"; else route();
    }

    function stopRefresh() { if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; } }
    function autoRefresh(render) { stopRefresh(); refreshTimer = setInterval(() => { if (!document.querySelector("#view :focus")) render().catch(() => {}); }, 5000); }

    // --- Tables with server-side paging, sorting and filtering
    const listState = {};
    function pagedTable(key, path, columns, options = {}) {
      const state = listState[key] || (listState[key] = {page: 1, pageSize: 50, sort: options.sort || "name", reverse: false, name: "", regex: false});
      const container = document.createElement("div");
      container.className = "listing"; container.dataset.list = key;
      // The toolbar is made once (the filter keeps its focus and text across refreshes); each load replaces the
      // results below it.
      container.innerHTML = `
        <div class="toolbar">
          <label>Filter <input class="filter" value="${esc(state.name)}" placeholder="name"></label>
          <label><input type="checkbox" class="regex" ${state.regex ? "checked" : ""}> regex</label>
          <span class="count"></span>
        </div>
        <div class="results"></div>`;
      const filter = $(".filter", container);
      filter.addEventListener("change", () => { state.name = filter.value; state.page = 1; load(); });
      $(".regex", container).addEventListener("change", e => { state.regex = e.target.checked; state.page = 1; load(); });
      const results = $(".results", container);
      let generation = 0;
      async function load() {
        const mine = ++generation;
        const query = new URLSearchParams({page: state.page, page_size: state.pageSize, sort: state.sort, sort_reverse: state.reverse, name: state.name, use_regex: state.regex});
        let data;
        try { data = await get(path + "?" + query); }
        catch (e) { if (e.status === 400 && state.page > 1) { state.page = 1; return load(); } throw e; }
        if (mine !== generation) return;  // a newer load is on its way
        const head = columns.map(c => `<th class="${c.num ? "num " : ""}${c.sort ? "sortable" : ""}${c.sort === state.sort ? " sorted" + (state.reverse ? " reverse" : "") : ""}" data-sort="${esc(c.sort || "")}">${esc(c.title)}</th>`).join("");
        const rows = data.items.map(item => "<tr>" + columns.map(c => `<td class="${c.num ? "num" : ""}">${c.render(item)}</td>`).join("") + "</tr>").join("");
        $(".count", container).textContent = `${fmt(data.filtered_count)} of ${fmt(data.total_count)}`;
        results.innerHTML = `
          <table><thead><tr>${head}</tr></thead><tbody>${rows || `<tr><td colspan="${columns.length}">Nothing here.</td></tr>`}</tbody></table>
          <div class="pager">
            <button class="plain prev" ${state.page <= 1 ? "disabled" : ""}>&lsaquo; Previous</button>
            <span>Page ${data.page} of ${data.page_count}</span>
            <button class="plain next" ${state.page >= data.page_count ? "disabled" : ""}>Next &rsaquo;</button>
            <label>Page size <select class="size">${[20, 50, 100, 500].map(n => `<option ${n === state.pageSize ? "selected" : ""}>${n}</option>`).join("")}</select></label>
          </div>`;
        $(".prev", results).addEventListener("click", () => { state.page--; load(); });
        $(".next", results).addEventListener("click", () => { state.page++; load(); });
        $(".size", results).addEventListener("change", e => { state.pageSize = Number(e.target.value); state.page = 1; load(); });
        results.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {
          if (state.sort === th.dataset.sort) state.reverse = !state.reverse; else { state.sort = th.dataset.sort; state.reverse = false; }
          load();
        }));
        if (options.after) options.after(container, data);
      }
      container.load = load;
      return container;
    }

    function table(columns, items, empty = "Nothing here.") {
      const head = columns.map(c => `<th class="${c.num ? "num" : ""}">${esc(c.title)}</th>`).join("");
      const rows = items.map(item => "<tr>" + columns.map(c => `<td class="${c.num ? "num" : ""}">${c.render(item)}</td>`).join("") + "</tr>").join("");
      return `<table><thead><tr>${head}</tr></thead><tbody>${rows || `<tr><td colspan="${columns.length}">${esc(empty)}</td></tr>`}</tbody></table>`;
    }
    function kv(object) { const keys = Object.keys(object || {}); return keys.length ? keys.map(k => `${esc(k)}: ${esc(JSON.stringify(object[k]))}`).join("<br>") : ""; }
    function vhostOptions(vhosts, selected) { return vhosts.map(v => `<option ${v.name === selected ? "selected" : ""}>${esc(v.name)}</option>`).join(""); }
    function parseJSON(text, what) { if (!text.trim()) return {}; try { return JSON.parse(text); } catch (e) { throw new Error(what + " must be JSON: " + e.message); } }
    function formValues(form) { const values = {}; new FormData(form).forEach((v, k) => { values[k] = v; }); return values; }

    // --- Overview
    function chart(history, series, title) {
      const width = 600, height = 150, pad = 4;
      const max = Math.max(1, ...history.flatMap(h => series.map(s => h[s.key] || 0)));
      const t0 = history.length ? history[0].time : 0, t1 = history.length ? history[history.length - 1].time : 1;
      const x = t => pad + (width - 2 * pad) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
      const y = v => height - pad - (height - 2 * pad) * (v / max);
      const lines = series.map(s => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${history.map(h => x(h.time).toFixed(1) + "," + y(h[s.key] || 0).toFixed(1)).join(" ")}"/>`).join("");
      const legend = series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.title)}: ${fmt(history.length ? history[history.length - 1][s.key] : 0)}${s.unit || ""}</span>`).join("");
      return `<div class="chart" data-chart="${esc(title)}"><strong>${esc(title)}</strong> <span class="muted">(max ${fmt(max)})</span>
        <svg viewBox="0 0 ${width} ${height}" preserveAspectRatio="none">${lines}</svg><div class="legend">${legend}</div></div>`;
    }
    async function overviewView() {
      async function render() {
        const overview = await get("/overview?history=true");
        let nodes = [];
        try { nodes = await get("/nodes"); } catch (e) { /* monitoring tag needed */ }
        const totals = overview.object_totals, queued = overview.queue_totals || {}, stats = overview.message_stats || {};
        const card = (label, value, id) => `<div class="card" id="${id}"><div class="value">${fmt(value)}</div><div class="label">${esc(label)}</div></div>`;
        const history = overview.history || [];
        const node = nodes[0];
        view().innerHTML = `<h1>Overview</h1>
          <div class="cards">
            ${card("Connections", totals.connections, "total-connections")}${card("Channels", totals.channels, "total-channels")}
            ${card("Exchanges", totals.exchanges, "total-exchanges")}${card("Queues", totals.queues, "total-queues")}
            ${card("Consumers", totals.consumers, "total-consumers")}${card("Ready", queued.messages_ready, "total-ready")}
            ${card("Unacked", queued.messages_unacknowledged, "total-unacked")}
          </div>
          ${chart(history, [{key: "publish", title: "Publish", color: "#2d6cdf", unit: "/s"}, {key: "deliver_get", title: "Deliver", color: "#23804a", unit: "/s"}, {key: "ack", title: "Ack", color: "#b8860b", unit: "/s"}], "Message rates")}
          ${chart(history, [{key: "ready", title: "Ready", color: "#2d6cdf"}, {key: "unacked", title: "Unacked", color: "#c2362b"}], "Queued messages")}
          <h2>Message totals</h2>
          ${table([{title: "Publish", render: () => fmt(stats.publish) + " (" + rate(stats, "publish") + ")"}, {title: "Confirm", render: () => fmt(stats.confirm)}, {title: "Deliver / get", render: () => fmt(stats.deliver_get) + " (" + rate(stats, "deliver_get") + ")"}, {title: "Ack", render: () => fmt(stats.ack)}, {title: "Redelivered", render: () => fmt(stats.redeliver)}, {title: "Unroutable (dropped)", render: () => fmt(stats.drop_unroutable)}], [0])}
          <h2>Node</h2>
          ${node ? table([{title: "Name", render: n => esc(n.name)}, {title: "Memory", render: n => `${bytes(n.mem_used)} of ${bytes(n.mem_limit)} ${n.mem_alarm ? '<span class="alarm">alarm</span>' : '<span class="ok">ok</span>'}`}, {title: "Disk free", render: n => `${bytes(n.disk_free)} (limit ${bytes(n.disk_free_limit)}) ${n.disk_free_alarm ? '<span class="alarm">alarm</span>' : '<span class="ok">ok</span>'}`}, {title: "File descriptors", render: n => `${fmt(n.fd_used)} of ${fmt(n.fd_total)}`}, {title: "Uptime", render: n => fmt(n.uptime / 1000) + " s"}], [node]) : "<p>Node figures need the monitoring tag.</p>"}
          <p class="muted">${esc(overview.product_name)} ${esc(overview.product_version)} on ${esc(overview.node)}</p>`;
      }
      await render();
      autoRefresh(render);
    }

    // --- Queues
    async function queuesView() {
      const vhosts = await get("/vhosts");
      view().innerHTML = `<h1>Queues</h1><div id="queues-list"></div>
        <h2>Add a queue</h2>
        <form class="box" id="add-queue">
          <label>Virtual host <select name="vhost">${vhostOptions(vhosts, "/")}</select></label>
          <label>Name <input name="name" required></label>
          <label>Type <select name="type"><option>classic</option><option>quorum</option></select></label>
          <label>Durable <select name="durable"><option>true</option><option>false</option></select></label>
          <label>Arguments (JSON) <textarea name="arguments" placeholder='{"x-max-length": 1000}'></textarea></label>
          <button type="submit">Add queue</button>
        </form>`;
      const list = pagedTable("queues", "/queues", [
        {title: "Virtual host", sort: "vhost", render: q => esc(q.vhost)},
        {title: "Name", sort: "name", render: q => `<a class="queue-link" href="#/queues/${enc(q.vhost)}/${enc(q.name)}">${esc(q.name)}</a>`},
        {title: "Type", sort: "type", render: q => esc(q.type)},
        {title: "Policy", sort: "policy", render: q => esc(q.policy)},
        {title: "Consumers", sort: "consumers", num: true, render: q => fmt(q.consumers)},
        {title: "Ready", sort: "messages_ready", num: true, render: q => fmt(q.messages_ready)},
        {title: "Unacked", sort: "messages_unacknowledged", num: true, render: q => fmt(q.messages_unacknowledged)},
        {title: "Total", sort: "messages", num: true, render: q => fmt(q.messages)},
        {title: "Incoming", sort: "message_stats.publish_details.rate", num: true, render: q => rate(q.message_stats, "publish")},
      ]);
      $("#queues-list").appendChild(list);
      await list.load();
      $("#add-queue").addEventListener("submit", event => {
        event.preventDefault();
        const v = formValues(event.target);
        act(`Queue ${v.name} added.`, () => api("PUT", `/queues/${enc(v.vhost)}/${enc(v.name)}`, {durable: v.durable === "true", auto_delete: false, arguments: {...parseJSON(v.arguments, "Arguments"), ...(v.type === "quorum" ? {"x-queue-type": "quorum"} : {})}}));
      });
      autoRefresh(() => list.load());
    }

    function publishForm(id, withKey = true) {
      return `<form class="box" id="${id}">
        ${withKey ? '<label>Routing key <input name="routing_key"></label>' : ""}
        <label>Delivery mode <select name="delivery_mode"><option value="1">1 - non-persistent</option><option value="2">2 - persistent</option></select></label>
        <label>Headers (JSON) <textarea name="headers" placeholder='{"key": "value"}'></textarea></label>
        <label>Properties (JSON) <textarea name="properties" placeholder='{"content_type": "text/plain"}'></textarea></label>
        <label>Payload <textarea name="payload"></textarea></label>
        <button type="submit">Publish message</button></form>`;
    }
    function publishBody(form) {
      const v = formValues(form);
      const properties = {...parseJSON(v.properties, "Properties"), delivery_mode: Number(v.delivery_mode)};
      const headers = parseJSON(v.headers, "Headers");
      if (Object.keys(headers).length) properties.headers = headers;
      return {routing_key: v.routing_key || "", payload: v.payload, payload_encoding: "string", properties};
    }

    async function queueView(vhost, name) {
      const path = `/queues/${enc(vhost)}/${enc(name)}`;
      async function render() {
        const queue = await get(path);
        const bindings = await get(path + "/bindings");
        view().innerHTML = `<h1>Queue <span id="queue-name">${esc(name)}</span> <small>in ${esc(vhost)}</small></h1>
          <div class="cards">
            <div class="card"><div class="value" id="queue-ready">${fmt(queue.messages_ready)}</div><div class="label">Ready</div></div>
            <div class="card"><div class="value" id="queue-unacked">${fmt(queue.messages_unacknowledged)}</div><div class="label">Unacked</div></div>
            <div class="card"><div class="value" id="queue-total">${fmt(queue.messages)}</div><div class="label">Total</div></div>
            <div class="card"><div class="value">${fmt(queue.consumers)}</div><div class="label">Consumers</div></div>
            <div class="card"><div class="value">${bytes(queue.message_bytes)}</div><div class="label">Message bytes</div></div>
          </div>
          ${table([{title: "Type", render: q => esc(q.type)}, {title: "Durable", render: q => esc(q.durable)}, {title: "Auto-delete", render: q => esc(q.auto_delete)}, {title: "Exclusive", render: q => esc(q.exclusive)}, {title: "Arguments", render: q => kv(q.arguments)}, {title: "Policy", render: q => esc(q.policy) + (q.operator_policy ? " / " + esc(q.operator_policy) : "")}, {title: "Effective policy", render: q => kv(q.effective_policy_definition)}], [queue])}
          <h2>Consumers</h2>
          ${table([{title: "Tag", render: c => esc(c.consumer_tag)}, {title: "Channel", render: c => esc(c.channel_details.name)}, {title: "Ack required", render: c => esc(c.ack_required)}, {title: "Exclusive", render: c => esc(c.exclusive)}, {title: "Prefetch", num: true, render: c => fmt(c.prefetch_count)}], queue.consumer_details || [], "No consumers.")}
          <h2>Bindings</h2>
          ${table([{title: "From", render: b => esc(b.source || "(default exchange)")}, {title: "Routing key", render: b => esc(b.routing_key)}, {title: "Arguments", render: b => kv(b.arguments)}, {title: "", render: b => b.source ? `<button class="danger unbind" data-source="${esc(b.source)}" data-key="${esc(b.properties_key)}">Unbind</button>` : ""}], bindings)}
          <form class="inline" id="bind-queue"><label>From exchange <input name="source" required></label><label>Routing key <input name="routing_key"></label><label>Arguments (JSON) <input name="arguments"></label><button type="submit">Bind</button></form>
          <h2>Publish message</h2><p>To this queue, through the default exchange.</p>${publishForm("queue-publish", false)}
          <h2>Get messages</h2>
          <form class="inline" id="get-messages">
            <label>Ack mode <select name="ackmode"><option value="ack_requeue_true">Nack, requeue</option><option value="ack_requeue_false">Automatic ack</option><option value="reject_requeue_true">Reject, requeue</option><option value="reject_requeue_false">Reject, no requeue</option></select></label>
            <label>Encoding <select name="encoding"><option value="auto">Auto string / base64</option><option value="base64">base64</option></select></label>
            <label>Messages <input name="count" type="number" value="1" min="1"></label>
            <button type="submit" id="get-button">Get messages</button>
          </form>
          <div id="got"></div>
          <h2>Purge and delete</h2>
          <div class="toolbar"><button class="danger" id="purge">Purge messages</button><button class="danger" id="delete-queue">Delete queue</button></div>`;
        view().querySelectorAll(".unbind").forEach(button => button.addEventListener("click", () =>
          act("Binding removed.", () => api("DELETE", `/bindings/${enc(vhost)}/e/${enc(button.dataset.source)}/q/${enc(name)}/${enc(button.dataset.key)}`))));
        $("#bind-queue").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
          act("Binding added.", () => api("POST", `/bindings/${enc(vhost)}/e/${enc(v.source)}/q/${enc(name)}`, {routing_key: v.routing_key, arguments: parseJSON(v.arguments, "Arguments")})); });
        $("#queue-publish").addEventListener("submit", event => { event.preventDefault(); const body = publishBody(event.target); body.routing_key = name;
          act("Message published.", async () => { const r = await api("POST", `/exchanges/${enc(vhost)}/amq.default/publish`, body); if (!r.data.routed) throw new Error("Message published, but not routed."); }); });
        $("#get-messages").addEventListener("submit", async event => {
          event.preventDefault(); const v = formValues(event.target);
          try {
            const {data} = await api("POST", path + "/get", {count: Number(v.count), ackmode: v.ackmode, encoding: v.encoding, truncate: 50000});
            $("#got").innerHTML = data.length ? data.map((m, i) => `<h3>Message ${i + 1}</h3>${table([{title: "Exchange", render: m => esc(m.exchange || "(default)")}, {title: "Routing key", render: m => esc(m.routing_key)}, {title: "Redelivered", render: m => esc(m.redelivered)}, {title: "Properties", render: m => kv(m.properties)}, {title: "Payload (" + m.payload_bytes + " bytes, " + m.payload_encoding + ")", render: m => `<pre class="payload">${esc(m.payload)}</pre>`}], [m])}`).join("") : '<p id="queue-empty">Queue is empty.</p>';
          } catch (e) { flash(e.message, true); }
        });
        $("#purge").addEventListener("click", () => { if (confirm("Purge all messages of " + name + "?")) act("Queue purged.", () => api("DELETE", path + "/contents")); });
        $("#delete-queue").addEventListener("click", () => { if (confirm("Delete queue " + name + "?")) act("Queue deleted.", async () => { await api("DELETE", path); location.hash = "#/queues"; }); });
      }
      await render();
    }

    // --- Exchanges
    async function exchangesView() {
      const vhosts = await get("/vhosts");
      const overview = await get("/overview");
      view().innerHTML = `<h1>Exchanges</h1><div id="exchanges-list"></div>
        <h2>Add an exchange</h2>
        <form class="box" id="add-exchange">
          <label>Virtual host <select name="vhost">${vhostOptions(vhosts, "/")}</select></label>
          <label>Name <input name="name" required></label>
          <label>Type <select name="type">${overview.exchange_types.map(t => `<option>${esc(t.name)}</option>`).join("")}</select></label>
          <label>Durable <select name="durable"><option>true</option><option>false</option></select></label>
          <label>Internal <select name="internal"><option>false</option><option>true</option></select></label>
          <label>Arguments (JSON) <textarea name="arguments"></textarea></label>
          <button type="submit">Add exchange</button></form>`;
      const list = pagedTable("exchanges", "/exchanges", [
        {title: "Virtual host", sort: "vhost", render: x => esc(x.vhost)},
        {title: "Name", sort: "name", render: x => `<a class="exchange-link" href="#/exchanges/${enc(x.vhost)}/${enc(x.name || "amq.default")}">${esc(x.name || "(AMQP default)")}</a>`},
        {title: "Type", sort: "type", render: x => esc(x.type)},
        {title: "Features", render: x => [x.durable ? "durable" : "", x.auto_delete ? "auto-delete" : "", x.internal ? "internal" : ""].filter(Boolean).join(", ")},
        {title: "Message rate in", sort: "message_stats.publish_in_details.rate", num: true, render: x => rate(x.message_stats, "publish_in")},
      ]);
      $("#exchanges-list").appendChild(list);
      await list.load();
      $("#add-exchange").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
        act(`Exchange ${v.name} added.`, () => api("PUT", `/exchanges/${enc(v.vhost)}/${enc(v.name)}`, {type: v.type, durable: v.durable === "true", internal: v.internal === "true", auto_delete: false, arguments: parseJSON(v.arguments, "Arguments")})); });
    }

    async function exchangeView(vhost, name) {
      const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
      const exchange = await get(path);
      const bindings = await get(path + "/bindings/source");
      const display = exchange.name || "(AMQP default)";
      view().innerHTML = `<h1>Exchange <span id="exchange-name">${esc(display)}</span> <small>in ${esc(vhost)}</small></h1>
        ${table([{title: "Type", render: x => esc(x.type)}, {title: "Durable", render: x => esc(x.durable)}, {title: "Internal", render: x => esc(x.internal)}, {title: "Arguments", render: x => kv(x.arguments)}, {title: "Policy", render: x => esc(x.policy)}], [exchange])}
        <h2>Bindings from this exchange</h2>
        ${table([{title: "To", render: b => esc(b.destination) + " (" + esc(b.destination_type) + ")"}, {title: "Routing key", render: b => esc(b.routing_key)}, {title: "Arguments", render: b => kv(b.arguments)}, {title: "", render: b => `<button class="danger unbind" data-type="${b.destination_type === "queue" ? "q" : "e"}" data-destination="${esc(b.destination)}" data-key="${esc(b.properties_key)}">Unbind</button>`}], bindings)}
        ${exchange.name ? `<form class="inline" id="bind-exchange"><label>To <select name="type"><option value="q">queue</option><option value="e">exchange</option></select></label><label>Name <input name="destination" required></label><label>Routing key <input name="routing_key"></label><label>Arguments (JSON) <input name="arguments"></label><button type="submit">Bind</button></form>` : ""}
        <h2>Publish message</h2>${publishForm("exchange-publish")}
        ${exchange.name && !exchange.name.startsWith("amq.") ? '<h2>Delete</h2><button class="danger" id="delete-exchange">Delete this exchange</button>' : ""}`;
      view().querySelectorAll(".unbind").forEach(button => button.addEventListener("click", () =>
        act("Binding removed.", () => api("DELETE", `/bindings/${enc(vhost)}/e/${enc(name)}/${button.dataset.type}/${enc(button.dataset.destination)}/${enc(button.dataset.key)}`))));
      const bind = $("#bind-exchange");
      if (bind) bind.addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
        act("Binding added.", () => api("POST", `/bindings/${enc(vhost)}/e/${enc(name)}/${v.type}/${enc(v.destination)}`, {routing_key: v.routing_key, arguments: parseJSON(v.arguments, "Arguments")})); });
      $("#exchange-publish").addEventListener("submit", event => { event.preventDefault();
        act("Message published.", async () => { const r = await api("POST", path + "/publish", publishBody(event.target)); if (!r.data.routed) throw new Error("Message published, but not routed."); }); });
      const remove = $("#delete-exchange");
      if (remove) remove.addEventListener("click", () => { if (confirm("Delete exchange " + name + "?")) act("Exchange deleted.", async () => { await api("DELETE", path); location.hash = "#/exchanges"; }); });
    }

    // --- Connections and channels
    async function connectionsView() {
      const list = pagedTable("connections", "/connections", [
        {title: "Name", sort: "name", render: c => `<a class="connection-link" href="#/connections/${enc(c.name)}">${esc(c.name)}</a>`},
        {title: "User", sort: "user", render: c => esc(c.user)},
        {title: "Virtual host", sort: "vhost", render: c => esc(c.vhost)},
        {title: "State", sort: "state", render: c => esc(c.state)},
        {title: "Client", render: c => esc((c.client_properties || {}).product || "") + " " + esc((c.client_properties || {}).version || "")},
        {title: "Channels", sort: "channels", num: true, render: c => fmt(c.channels)},
        {title: "From client", sort: "recv_oct", num: true, render: c => bytes(c.recv_oct)},
        {title: "To client", sort: "send_oct", num: true, render: c => bytes(c.send_oct)},
      ]);
      view().innerHTML = "<h1>Connections</h1>";
      view().appendChild(list);
      await list.load();
      autoRefresh(() => list.load());
    }
    async function connectionView(name) {
      const connection = await get(`/connections/${enc(name)}`);
      const channels = await get(`/connections/${enc(name)}/channels`);
      view().innerHTML = `<h1>Connection <span id="connection-name">${esc(name)}</span></h1>
        ${table([{title: "User", render: c => esc(c.user)}, {title: "Virtual host", render: c => esc(c.vhost)}, {title: "State", render: c => esc(c.state)}, {title: "Protocol", render: c => esc(c.protocol)}, {title: "Heartbeat", render: c => fmt(c.timeout) + " s"}, {title: "Frame max", render: c => fmt(c.frame_max)}, {title: "Client properties", render: c => kv(c.client_properties)}], [connection])}
        <h2>Channels</h2>${channelTable(channels)}
        <h2>Close this connection</h2>
        <form class="inline" id="close-connection"><label>Reason <input name="reason" value="Closed via management UI"></label><button class="danger" type="submit">Force close</button></form>`;
      $("#close-connection").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
        act("Connection closed.", async () => { await api("DELETE", `/connections/${enc(name)}`, undefined, {"X-Reason": v.reason}); location.hash = "#/connections"; }); });
    }
    function channelTable(items) {
      return table([{title: "Channel", render: c => esc(c.name)}, {title: "User", render: c => esc(c.user)}, {title: "Mode", render: c => c.confirm ? "confirm" : c.transactional ? "transactional" : ""}, {title: "State", render: c => esc(c.state)}, {title: "Prefetch", num: true, render: c => fmt(c.prefetch_count)}, {title: "Unacked", num: true, render: c => fmt(c.messages_unacknowledged)}, {title: "Unconfirmed", num: true, render: c => fmt(c.messages_unconfirmed)}, {title: "Consumers", num: true, render: c => fmt(c.consumer_count)}], items, "No channels.");
    }
    async function channelsView() {
      const list = pagedTable("channels", "/channels", [
        {title: "Channel", sort: "name", render: c => `<a href="#/connections/${enc(c.connection_details.name)}">${esc(c.name)}</a>`},
        {title: "User", sort: "user", render: c => esc(c.user)},
        {title: "Mode", render: c => c.confirm ? "confirm" : c.transactional ? "transactional" : ""},
        {title: "State", sort: "state", render: c => esc(c.state)},
        {title: "Prefetch", sort: "prefetch_count", num: true, render: c => fmt(c.prefetch_count)},
        {title: "Unacked", sort: "messages_unacknowledged", num: true, render: c => fmt(c.messages_unacknowledged)},
        {title: "Consumers", sort: "consumer_count", num: true, render: c => fmt(c.consumer_count)},
      ]);
      view().innerHTML = "<h1>Channels</h1>";
      view().appendChild(list);
      await list.load();
      autoRefresh(() => list.load());
    }

    // --- Admin: users, vhosts, permissions, policies, definitions
    async function adminView(section = "users") {
      const tabs = ["users", "vhosts", "permissions", "policies", "definitions"].map(s => `<a href="#/admin/${s}" class="${s === section ? "active" : ""}" data-tab="${s}">${s[0].toUpperCase() + s.slice(1)}</a>`).join("");
      view().innerHTML = `<h1>Admin</h1><div class="tabs">${tabs}</div><div id="admin"></div>`;
      const box = $("#admin");
      if (section === "users") {
        const users = await get("/users");
        box.innerHTML = `<h2>Users</h2>${table([{title: "Name", render: u => esc(u.name)}, {title: "Tags", render: u => esc(u.tags.join(", "))}, {title: "", render: u => `<button class="plain edit-user" data-name="${esc(u.name)}" data-tags="${esc(u.tags.join(","))}">Edit</button> <button class="danger delete-user" data-name="${esc(u.name)}">Delete</button>`}], users)}
          <h2>Add or update a user</h2>
          <form class="box" id="user-form"><label>Username <input name="name" required></label><label>Password <input name="password" type="password" placeholder="(unchanged when updating)"></label>
          <label>Tags <input name="tags" placeholder="administrator, monitoring, policymaker, management"></label><button type="submit">Save user</button></form>`;
        box.querySelectorAll(".delete-user").forEach(b => b.addEventListener("click", () => { if (confirm("Delete user " + b.dataset.name + "?")) act("User deleted.", () => api("DELETE", `/users/${enc(b.dataset.name)}`)); }));
        box.querySelectorAll(".edit-user").forEach(b => b.addEventListener("click", () => { const f = $("#user-form"); f.name.value = b.dataset.name; f.tags.value = b.dataset.tags; f.password.focus(); }));
        $("#user-form").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target); const body = {tags: v.tags}; if (v.password) body.password = v.password;
          act(`User ${v.name} saved.`, () => api("PUT", `/users/${enc(v.name)}`, body)); });
      } else if (section === "vhosts") {
        const vhosts = await get("/vhosts");
        box.innerHTML = `<h2>Virtual hosts</h2>${table([{title: "Name", render: v => esc(v.name)}, {title: "Messages", num: true, render: v => fmt(v.messages)}, {title: "", render: v => `<button class="danger delete-vhost" data-name="${esc(v.name)}">Delete</button>`}], vhosts)}
          <form class="inline" id="vhost-form"><label>Name <input name="name" required></label><button type="submit">Add virtual host</button></form>`;
        box.querySelectorAll(".delete-vhost").forEach(b => b.addEventListener("click", () => { if (confirm("Delete virtual host " + b.dataset.name + " and everything in it?")) act("Virtual host deleted.", () => api("DELETE", `/vhosts/${enc(b.dataset.name)}`)); }));
        $("#vhost-form").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target); act(`Virtual host ${v.name} added.`, () => api("PUT", `/vhosts/${enc(v.name)}`)); });
      } else if (section === "permissions") {
        const [permissions, users, vhosts] = [await get("/permissions"), await get("/users"), await get("/vhosts")];
        box.innerHTML = `<h2>Permissions</h2>${table([{title: "User", render: p => esc(p.user)}, {title: "Virtual host", render: p => esc(p.vhost)}, {title: "Configure", render: p => esc(p.configure)}, {title: "Write", render: p => esc(p.write)}, {title: "Read", render: p => esc(p.read)}, {title: "", render: p => `<button class="danger delete-permission" data-user="${esc(p.user)}" data-vhost="${esc(p.vhost)}">Clear</button>`}], permissions)}
          <form class="inline" id="permission-form"><label>User <select name="user">${users.map(u => `<option>${esc(u.name)}</option>`).join("")}</select></label><label>Virtual host <select name="vhost">${vhostOptions(vhosts, "/")}</select></label>
          <label>Configure <input name="configure" value=".*"></label><label>Write <input name="write" value=".*"></label><label>Read <input name="read" value=".*"></label><button type="submit">Set permission</button></form>`;
        box.querySelectorAll(".delete-permission").forEach(b => b.addEventListener("click", () => act("Permission cleared.", () => api("DELETE", `/permissions/${enc(b.dataset.vhost)}/${enc(b.dataset.user)}`))));
        $("#permission-form").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
          act("Permission set.", () => api("PUT", `/permissions/${enc(v.vhost)}/${enc(v.user)}`, {configure: v.configure, write: v.write, read: v.read})); });
      } else if (section === "policies") {
        const [policies, vhosts] = [await get("/policies"), await get("/vhosts")];
        box.innerHTML = `<h2>Policies</h2>${table([{title: "Virtual host", render: p => esc(p.vhost)}, {title: "Name", render: p => esc(p.name)}, {title: "Pattern", render: p => esc(p.pattern)}, {title: "Apply to", render: p => esc(p["apply-to"])}, {title: "Definition", render: p => kv(p.definition)}, {title: "Priority", num: true, render: p => fmt(p.priority)}, {title: "", render: p => `<button class="plain edit-policy" data-policy="${esc(JSON.stringify(p))}">Edit</button> <button class="danger delete-policy" data-vhost="${esc(p.vhost)}" data-name="${esc(p.name)}">Delete</button>`}], policies)}
          <h2>Add or update a policy</h2>
          <form class="box" id="policy-form"><label>Virtual host <select name="vhost">${vhostOptions(vhosts, "/")}</select></label><label>Name <input name="name" required></label><label>Pattern <input name="pattern" required placeholder="^orders\\."></label>
          <label>Apply to <select name="apply"><option value="queues">Queues</option><option value="exchanges">Exchanges</option><option value="all">Exchanges and queues</option></select></label><label>Priority <input name="priority" type="number" value="0"></label>
          <label>Definition (JSON) <textarea name="definition" placeholder='{"max-length": 1000, "message-ttl": 60000}' required></textarea></label><button type="submit">Save policy</button></form>`;
        box.querySelectorAll(".delete-policy").forEach(b => b.addEventListener("click", () => act("Policy deleted.", () => api("DELETE", `/policies/${enc(b.dataset.vhost)}/${enc(b.dataset.name)}`))));
        box.querySelectorAll(".edit-policy").forEach(b => b.addEventListener("click", () => { const p = JSON.parse(b.dataset.policy), f = $("#policy-form");
          f.vhost.value = p.vhost; f.name.value = p.name; f.pattern.value = p.pattern; f.apply.value = p["apply-to"]; f.priority.value = p.priority; f.definition.value = JSON.stringify(p.definition, null, 2); }));
        $("#policy-form").addEventListener("submit", event => { event.preventDefault(); const v = formValues(event.target);
          act(`Policy ${v.name} saved.`, () => api("PUT", `/policies/${enc(v.vhost)}/${enc(v.name)}`, {pattern: v.pattern, "apply-to": v.apply, priority: Number(v.priority), definition: parseJSON(v.definition, "Definition")})); });
      } else {
        box.innerHTML = `<h2>Export definitions</h2><p>Users, virtual hosts, permissions, policies, exchanges, queues and bindings, in RabbitMQ's format.</p>
          <button id="export">Download definitions.json</button>
          <h2>Import definitions</h2><form class="box" id="import-form"><label>File <input type="file" name="file" accept=".json,application/json"></label><label>or JSON <textarea name="text"></textarea></label><button type="submit">Import</button></form>`;
        $("#export").addEventListener("click", async () => {
          try { const {data} = await api("GET", "/definitions"); const blob = new Blob([JSON.stringify(data, null, 2)], {type: "application/json"});
            const link = document.createElement("a"); link.href = URL.createObjectURL(blob); link.download = "definitions.json"; link.click(); flash("Definitions exported."); }
          catch (e) { flash(e.message, true); }
        });
        $("#import-form").addEventListener("submit", async event => { event.preventDefault(); const form = event.target;
          const text = form.file.files.length ? await form.file.files[0].text() : form.text.value;
          act("Definitions imported.", () => api("POST", "/definitions", text)); });
      }
    }

    // --- Routing
    async function route() {
      if (!credentials()) return showLogin();
      stopRefresh();
      const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
      document.querySelectorAll("#nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === (parts[0] || "overview")));
      try {
        switch (parts[0] || "") {
          case "": return await overviewView();
          case "queues": return parts.length >= 3 ? await queueView(parts[1], parts.slice(2).join("/")) : await queuesView();
          case "exchanges": return parts.length >= 3 ? await exchangeView(parts[1], parts.slice(2).join("/")) : await exchangesView();
          case "connections": return parts.length >= 2 ? await connectionView(parts.slice(1).join("/")) : await connectionsView();
          case "channels": return await channelsView();
          case "admin": return await adminView(parts[1] || "users");
          default: view().innerHTML = "<h1>Not found</h1>";
        }
      } catch (e) {
        if (e.message !== "not authorized") view().innerHTML = `<h1>Error</h1><p class="error">${esc(e.message)}</p>`;
      }
    }
    window.addEventListener("hashchange", route);

    (async () => {
      if (!credentials()) return showLogin();
      try { start(await get("/whoami")); } catch (e) { showLogin(); }
    })();
    """#
}
