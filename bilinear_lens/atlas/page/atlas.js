// Eigenvector atlas browser: static, opens from disk. Data: data/index.js (labels, ranking summary),
// data/vocab.js (token texts), data/shard-NNNNN.js (loaded on demand, one script tag per shard).
(function () {
  "use strict";
  var IX = window.ATLAS_INDEX, VOCAB = window.ATLAS_VOCAB || [];
  var $ = function (id) { return document.getElementById(id); };
  var state = { order: [], shown: 200, selected: null, open: null };
  var pending = {};

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function vis(s) { return esc(s).replace(/ /g, "\u2423").replace(/\n/g, "\u21b5"); }   // visible spaces in chips
  function raw(s) { return esc(s).replace(/\n/g, "\u21b5 "); }
  function tok(id) { return id >= 0 && id < VOCAB.length ? VOCAB[id] : "<" + id + ">"; }
  function fmt(x, d) {
    if (x === null || x === undefined || isNaN(x)) return "–";
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(d === undefined ? 2 : d - 1);
    return x.toFixed(d === undefined ? 3 : d);
  }
  function signed(x, d) { return (x >= 0 ? "+" : "\u2212") + fmt(Math.abs(x), d); }

  // ---- ranked list and search ----------------------------------------------------------------------
  function key(i, by) {
    if (by === "index") return -i;
    return IX[by][i];
  }
  function rebuild() {
    var by = $("sort").value, q = $("search").value.trim(), qi = q.toLowerCase();
    var idx = [], exact = [];
    var num = /^#?(\d+)$/.exec(q);
    for (var i = 0; i < IX.n; i++) {
      var lab = IX.labels[i];
      if (!q) { idx.push(i); continue; }
      var l = lab.trim().toLowerCase();
      if (num && IX.ids[i] === parseInt(num[1], 10)) exact.push(i);
      else if (l === qi) exact.push(i);
      else if (l.indexOf(qi) >= 0) idx.push(i);
    }
    idx.sort(function (a, b) { return key(b, by) - key(a, by) || a - b; });
    state.order = exact.concat(idx);
    state.shown = 200;
    renderList();
  }
  function renderList() {
    var by = $("sort").value, list = $("list"), html = [];
    var maxv = 0;
    for (var i = 0; i < IX.n; i++) if (by !== "index") maxv = Math.max(maxv, Math.abs(IX[by][i]));
    var n = Math.min(state.order.length, state.shown);
    for (var r = 0; r < n; r++) {
      var i = state.order[r], v = by === "index" ? 0 : Math.abs(IX[by][i]);
      html.push('<li data-i="' + i + '"' + (i === state.selected ? ' class="sel"' : "") + ' title="' +
        esc(IX.labels[i]) + '"><span class="lab"><span class="rk">' + (r + 1) + "</span>" + vis(IX.labels[i]) +
        '</span><span class="bar"><span style="width:' + (maxv ? (100 * v / maxv).toFixed(1) : 0) + '%"></span></span></li>');
    }
    if (state.order.length > n) html.push('<li class="more" id="more">show more (' + (state.order.length - n) + " left)</li>");
    list.innerHTML = html.join("");
    $("count").textContent = state.order.length + " of " + IX.n + " directions";
  }

  // ---- shards --------------------------------------------------------------------------------------
  function withShard(s, fn) {
    var have = (window.ATLAS_SHARDS || {})[s];
    if (have) return fn(have);
    (pending[s] = pending[s] || []).push(fn);
    if (pending[s].length > 1) return;
    var el = document.createElement("script");
    el.src = "data/shard-" + String(s).padStart(5, "0") + ".js";
    el.onerror = function () { $("main").innerHTML = '<div class="empty">Could not load ' + esc(el.src) + ".</div>"; };
    document.head.appendChild(el);
  }
  window.atlasShardLoaded = function (s) {
    var fns = pending[s] || [];
    delete pending[s];
    fns.forEach(function (fn) { fn(window.ATLAS_SHARDS[s]); });
  };

  // ---- direction view ------------------------------------------------------------------------------
  function spectrum(values) {
    var W = 560, H = 170, pad = 40, k = values.length, m = 0;
    values.forEach(function (v) { m = Math.max(m, Math.abs(v)); });
    m = m || 1;
    var bw = (W - pad - 8) / k, mid = H / 2, out = ['<svg class="spectrum" id="spectrum" viewBox="0 0 ' + W + " " + H +
      '" width="100%" role="img" aria-label="spectrum">'];
    out.push('<line x1="' + pad + '" x2="' + W + '" y1="' + mid + '" y2="' + mid + '" stroke="#c7cbd4"/>');
    out.push('<text x="2" y="14">' + fmt(m, 2) + '</text><text x="2" y="' + (H - 4) + '">' + fmt(-m, 2) + "</text>");
    values.forEach(function (v, i) {
      var h = (mid - 16) * Math.abs(v) / m, x = pad + i * bw + bw * 0.15, y = v >= 0 ? mid - h : mid;
      out.push('<rect data-i="' + i + '" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' + (bw * 0.7).toFixed(1) +
        '" height="' + Math.max(h, 0.5).toFixed(1) + '" rx="2" fill="' + (v >= 0 ? "#2563eb" : "#dc2626") +
        '"><title>\u03bb' + (i + 1) + " = " + fmt(v, 4) + "</title></rect>");
      out.push('<text x="' + (x + bw * 0.35).toFixed(1) + '" y="' + (v >= 0 ? mid + 12 : mid - 4) +
        '" text-anchor="middle">' + (i + 1) + "</text>");
    });
    out.push("</svg>");
    return out.join("");
  }
  function chips(ids, vals, label, digits) {
    return '<div class="chips">' + ids.map(function (id, j) {
      return '<span class="chip ' + (vals[j] >= 0 ? "p" : "n") + '">' + label(id) + "<small>" + signed(vals[j], digits) + "</small></span>";
    }).join("") + "</div>";
  }
  function contextHtml(row, e) {
    if (!row["contexts.tokens"]) return "";
    var toks = row["contexts.tokens"][e], acts = row["contexts.acts"][e], peak = row["contexts.act"][e];
    var m = 0;
    acts.forEach(function (a) { a.forEach(function (x) { m = Math.max(m, Math.abs(x)); }); });
    m = m || 1;
    var lines = toks.map(function (ts, c) {
      var spans = ts.map(function (t, w) {
        if (t < 0) return "";
        var a = acts[c][w], al = Math.min(1, Math.abs(a) / m) * 0.85;
        var col = a >= 0 ? "37,99,235" : "220,38,38";
        var isPeak = Math.abs(a) > 0 && Math.abs(Math.abs(a) - Math.abs(peak[c])) <= 1e-6 * Math.max(1, Math.abs(peak[c]));
        return '<span class="t' + (isPeak ? " peak" : "") + '" style="background:rgba(' + col + "," + al.toFixed(3) +
          ')" title="' + esc(tok(t)) + ": " + fmt(a, 4) + '">' + raw(tok(t)) + "</span>";
      }).join("");
      return '<div class="ctx"><span class="a">' + signed(peak[c], 3) + "</span>" + spans + "</div>";
    });
    return '<div class="sub contexts"><h3>Top contexts (activation \u03bb(v\u00b7x)\u00b2)</h3>' + lines.join("") + "</div>";
  }
  function card(row, e, open) {
    var lam = row.values[e], parts = ['<div class="card' + (open ? " open" : "") + '" data-e="' + e + '" id="card-' + e + '">'];
    parts.push('<div class="ch"><span class="rank">#' + (e + 1) + '</span><span class="lam ' + (lam >= 0 ? "p" : "n") +
      '">\u03bb = <span class="lamv">' + signed(lam, 4) + '</span></span><span class="res">residual ' +
      fmt(row.residuals[e], 2) + " |\u03bb\u2081|</span></div>");
    (IX.token_paths || ["direct"]).forEach(function (p, pi) {
      if (!open && pi > 0) return;
      var ids = row["tokens." + p + ".ids"], pr = row["tokens." + p + ".proj"];
      if (!ids) return;
      var n = open ? ids[e].length : Math.min(6, ids[e].length);
      parts.push('<div class="sub"><h3>Tokens (' + (p === "direct" ? "embedding, direct path" : "OV " + p.slice(3)) +
        ", v\u00b7x)</h3>" + chips(ids[e].slice(0, n), pr[e].slice(0, n), function (id) { return vis(tok(id)); }, 2) + "</div>");
    });
    if (open && row["sae_in.ids"]) {
      parts.push('<div class="sub"><h3>Input-SAE features (cos)</h3>' + chips(row["sae_in.ids"][e], row["sae_in.cos"][e],
        function (f) { return "f" + f; }, 2) + "</div>");
    }
    if (open) parts.push(contextHtml(row, e));
    else if (row["contexts.tokens"]) parts.push('<div class="hint">click for top contexts</div>');
    parts.push("</div>");
    return parts.join("");
  }
  function renderDirection(i) {
    var s = Math.floor(i / IX.shard);
    withShard(s, function (sh) {
      if (state.selected !== i) return;
      var row = sh.rows[i - sh.start], html = [];
      var maxres = Math.max.apply(null, row.residuals);
      html.push('<div class="dhead"><h1 id="dlabel">' + vis(row.label) + '</h1><span class="kind">' + esc(IX.kind) +
        " direction " + i + (IX.ids[i] >= 0 ? " \u00b7 id " + IX.ids[i] : "") + "</span></div>");
      html.push('<div class="stats">' + [["low-rankness", fmt(row.low_rank, 4), "lowrank"], ["|\u03bb\u2081|", fmt(Math.abs(row.values[0]), 4), "lam1"],
        ["top-" + IX.k + " energy", (100 * row.energy).toFixed(1) + "%", "energy"], ["\u2016Q\u2016F", fmt(row.fro, 4), "fro"],
        ["max residual", fmt(maxres, 2), "maxres"]].map(function (s) {
        return '<div class="stat"><div class="k">' + s[0] + '</div><div class="v" id="stat-' + s[2] + '">' + s[1] + "</div></div>";
      }).join("") + "</div>");
      var out = row["output.ids"] ? '<div class="panel"><h3>Output side: logits this direction raises</h3>' +
        chips(row["output.ids"], row["output.logit"], function (id) { return vis(tok(id)); }, 2) + "</div>" : "";
      html.push('<div class="row2"><div class="panel"><h3>Spectrum (top ' + IX.k + " by |\u03bb|)</h3>" + spectrum(row.values) +
        "</div>" + out + "</div>");
      html.push('<div class="cards" id="cards">' + row.values.map(function (_, e) { return card(row, e, e === state.open); }).join("") + "</div>");
      $("main").innerHTML = html.join("");
      $("main").scrollTop = 0;
    });
  }
  function select(i, e) {
    state.selected = i;
    state.open = e === undefined ? null : e;
    history.replaceState(null, "", "#d=" + i + (state.open !== null ? "&e=" + state.open : ""));
    renderList();
    renderDirection(i);
  }

  // ---- wiring --------------------------------------------------------------------------------------
  function init() {
    if (!IX) { $("main").innerHTML = '<div class="empty">data/index.js is missing: is this an atlas folder?</div>'; return; }
    $("meta").textContent = IX.model + " \u00b7 layer " + IX.layer + " \u00b7 " + IX.n + " " + IX.kind + " directions \u00b7 top-" +
      IX.k + " eigenvectors \u00b7 residuals \u2264 " + IX.tol + " |\u03bb\u2081|";
    $("search").addEventListener("input", rebuild);
    $("search").addEventListener("keydown", function (ev) { if (ev.key === "Enter" && state.order.length) select(state.order[0]); });
    $("sort").addEventListener("change", rebuild);
    $("list").addEventListener("click", function (ev) {
      var li = ev.target.closest("li");
      if (!li) return;
      if (li.id === "more") { state.shown += 500; renderList(); return; }
      select(parseInt(li.getAttribute("data-i"), 10));
    });
    $("main").addEventListener("click", function (ev) {
      var c = ev.target.closest(".card");
      if (!c || c.classList.contains("open")) return;
      select(state.selected, parseInt(c.getAttribute("data-e"), 10));
    });
    rebuild();
    var m = /d=(\d+)(?:&e=(\d+))?/.exec(location.hash);
    if (m) select(parseInt(m[1], 10), m[2] === undefined ? undefined : parseInt(m[2], 10));
    else if (state.order.length) select(state.order[0]);
  }
  init();
})();
