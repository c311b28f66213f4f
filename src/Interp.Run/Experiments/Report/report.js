// Interp's report views: each <section data-interp-view="KIND"> holds its data as JSON <script> parts, read from the
// run's Parquet tables when the report was written (RunReport / ReportViewData.cs). A part is parsed only when the view
// needs it (the selected sequence), so a large run's report opens quickly. No network, no dependencies.
(() => {
  "use strict";

  // ---- shared: data parts, tooltip, colours, elements ----
  const parsed = new WeakMap();
  function part(view, name) {
    let parts = parsed.get(view);
    if (!parts) parsed.set(view, parts = new Map());
    if (!parts.has(name)) {
      const el = view.querySelector(`script[data-interp-part="${name}"]`);
      if (!el) throw new Error(`view ${view.id}: no data part '${name}'`);
      parts.set(name, JSON.parse(el.textContent));
    }
    return parts.get(name);
  }

  const tip = document.createElement("div");
  tip.className = "interp-tooltip";
  tip.setAttribute("data-interp-tooltip", "");
  function showTip(event, text) {
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = Math.min(event.clientX + 14, window.innerWidth - 440) + "px";
    tip.style.top = (event.clientY + 14) + "px";
  }
  const hideTip = () => { tip.style.display = "none"; };

  const fmt = v => v == null ? "–" : (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) ? v.toExponential(2) : v.toFixed(3);

  // Sequential white → blue on [0, max], or diverging red ← white → blue when the values change sign.
  function scale(min, max) {
    const diverging = min < 0 && max > 0, m = Math.max(Math.abs(min), Math.abs(max)) || 1;
    return v => {
      if (v == null || Number.isNaN(v)) return "rgb(238,238,238)";
      const t = diverging ? Math.max(-1, Math.min(1, v / m)) : Math.max(0, Math.min(1, (v - Math.min(min, 0)) / ((max - Math.min(min, 0)) || 1)));
      const [r, g, b] = t >= 0 ? [255 - 207 * t, 255 - 155 * t, 255 - 40 * t] : [255 + 40 * t, 255 + 190 * t, 255 + 190 * t];
      return `rgb(${Math.round(r)},${Math.round(g)},${Math.round(b)})`;
    };
  }
  const rgb = s => s.match(/\d+/g).map(Number);

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    e.append(...children);
    return e;
  }
  function select(control, label, options, value, onChange) {
    const s = el("select", { "data-interp-control": control });
    options.forEach(([v, text]) => s.append(el("option", { value: v, text })));
    s.value = value;
    s.addEventListener("change", () => onChange(s.value));
    return el("label", { text: label + " " }, s);
  }
  function legend(min, max, title) {
    const c = scale(min, max), bar = el("i");
    bar.style.background = `linear-gradient(to right, ${c(min < 0 && max > 0 ? -Math.max(-min, max) : min)}, ${c(min < 0 && max > 0 ? 0 : (min + max) / 2)}, ${c(max)})`;
    return el("div", { class: "interp-legend" }, `${title}: ${fmt(min)}`, bar, fmt(max));
  }
  const label = (tokens, p) => `${p}:${tokens[p]}`;

  // ---- attention: layer × head thumbnails, a head's pattern, tokens that show what they attend to ----
  function attention(view) {
    const meta = part(view, "meta"), body = view.querySelector(".interp-body");
    let seq = meta.sequences[0].part, layer = meta.layer, head = meta.head, focus = null;
    const headSelect = select("head", "head", [...Array(meta.layers * meta.heads).keys()].map(i => [`${Math.floor(i / meta.heads)}.${i % meta.heads}`, `${Math.floor(i / meta.heads)}.${i % meta.heads}`]),
      `${layer}.${head}`, v => { [layer, head] = v.split(".").map(Number); draw(); });
    const controls = el("div", { class: "interp-controls" },
      select("sequence", "sequence", meta.sequences.map(s => [s.part, `${s.index} (${s.length} tokens)`]), seq, v => { seq = v; focus = null; draw(); }), headSelect);
    const grid = el("div", { class: "interp-heads" });
    grid.style.gridTemplateColumns = `auto repeat(${meta.heads}, 68px)`;
    const thumbs = [];
    for (let l = 0; l < meta.layers; l++) {
      grid.append(el("span", { text: `layer ${l}` }));
      for (let h = 0; h < meta.heads; h++) {
        const c = el("canvas", { width: 64, height: 64, "data-head": `${l}.${h}`, title: `head ${l}.${h}` });
        c.addEventListener("click", () => { layer = l; head = h; headSelect.querySelector("select").value = `${l}.${h}`; draw(); });
        thumbs.push(c); grid.append(c);
      }
    }
    const from = el("div", { class: "interp-strip", "data-interp-strip": "attends-to" });
    const to = el("div", { class: "interp-strip", "data-interp-strip": "attended-by" });
    const matrix = el("canvas", { class: "interp-matrix" });
    body.append(controls, grid, from, to, matrix, legend(0, 1, "attention weight"));

    // w(l, h, q, k): each head's causal entries row by row (key ≤ query), as float32 in base64, decoded on first use.
    const decoded = new Map();
    function data() {
      if (!decoded.has(seq)) {
        const d = part(view, seq);
        decoded.set(seq, { tokens: d.tokens, w: d.w.map(s => { const b = atob(s), u = new Uint8Array(b.length); for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return new Float32Array(u.buffer); }) });
      }
      return decoded.get(seq);
    }
    const w = meta.causal ? (d, l, h, q, k) => k > q ? 0 : d.w[l * meta.heads + h][q * (q + 1) / 2 + k]
                          : (d, l, h, q, k) => d.w[l * meta.heads + h][q * d.tokens.length + k];   // a bidirectional encoder: every entry
    const colour = scale(0, 1);

    function strips(d) {
      const n = d.tokens.length, top = (vals) => vals.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
      for (const [strip, title, value] of [[from, "attends to", (p) => focus == null ? null : w(d, layer, head, focus, p)],
                                           [to, "attended by", (p) => focus == null ? null : w(d, layer, head, p, focus)]]) {
        strip.replaceChildren(el("b", { text: title }));
        for (let p = 0; p < n; p++) {
          const v = value(p), span = el("span", { class: "interp-tok" + (p === focus ? " focus" : ""), "data-pos": p, text: d.tokens[p] });
          if (v != null) { span.dataset.value = String(v); span.style.background = colour(v); }
          span.addEventListener("mouseenter", ev => {
            if (focus !== p) { focus = p; strips(d); paint(d); }
            const out = top([...Array(meta.causal ? p + 1 : n).keys()].map(k => w(d, layer, head, p, k)));
            const inc = top([...Array(n).keys()].map(q => w(d, layer, head, q, p)));
            showTip(ev, `${label(d.tokens, p)} (head ${layer}.${head})\nattends to: ${out.map(([x, k]) => `${label(d.tokens, k)} ${fmt(x)}`).join(", ")}` +
                        `\nattended by: ${inc.filter(([x]) => x > 0).map(([x, q]) => `${label(d.tokens, q)} ${fmt(x)}`).join(", ")}`);
          });
          span.addEventListener("mouseleave", hideTip);
          strip.append(span);
        }
      }
    }

    const cell = n => Math.max(2, Math.min(22, Math.floor(720 / n))), margin = n => cell(n) >= 8 ? 90 : 4;
    function paint(d) {
      const n = d.tokens.length, c = cell(n), m = margin(n), ctx = matrix.getContext("2d");
      matrix.width = m + n * c + 4; matrix.height = m + n * c + 4;
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, matrix.width, matrix.height);
      for (let q = 0; q < n; q++) for (let k = 0; k < (meta.causal ? q + 1 : n); k++) { ctx.fillStyle = colour(w(d, layer, head, q, k)); ctx.fillRect(m + k * c, m + q * c, c, c); }
      ctx.strokeStyle = "#bbb"; ctx.strokeRect(m, m, n * c, n * c);
      if (m > 4) {
        ctx.fillStyle = "#333"; ctx.font = `${Math.min(11, c)}px monospace`; ctx.textBaseline = "middle";
        for (let p = 0; p < n; p++) {
          const t = label(d.tokens, p).slice(0, 12);
          ctx.textAlign = "right"; ctx.fillText(t, m - 3, m + p * c + c / 2);
          ctx.save(); ctx.translate(m + p * c + c / 2, m - 3); ctx.rotate(-Math.PI / 2); ctx.textAlign = "left"; ctx.fillText(t, 0, 0); ctx.restore();
        }
      }
      if (focus != null) { ctx.strokeStyle = "#d33"; ctx.lineWidth = 2; ctx.strokeRect(m, m + focus * c, n * c, c); ctx.strokeRect(m + focus * c, m, c, n * c); }
    }
    matrix.addEventListener("mousemove", ev => {
      const d = data(), n = d.tokens.length, c = cell(n), m = margin(n), r = matrix.getBoundingClientRect();
      const k = Math.floor((ev.clientX - r.left - m) / c), q = Math.floor((ev.clientY - r.top - m) / c);
      if (q < 0 || k < 0 || q >= n || k >= n) return hideTip();
      showTip(ev, `head ${layer}.${head}: query ${label(d.tokens, q)} → key ${label(d.tokens, k)}: ${fmt(w(d, layer, head, q, k))}`);
    });
    matrix.addEventListener("mouseleave", hideTip);

    function thumbnails(d) {
      const n = d.tokens.length, img = new ImageData(n, n), off = el("canvas", { width: n, height: n });
      thumbs.forEach((c, i) => {
        const l = Math.floor(i / meta.heads), h = i % meta.heads;
        for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
          const [r, g, b] = rgb(colour(w(d, l, h, q, k))), o = 4 * (q * n + k);
          img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = b; img.data[o + 3] = 255;
        }
        off.getContext("2d").putImageData(img, 0, 0);
        const ctx = c.getContext("2d");
        ctx.imageSmoothingEnabled = n > 64;
        ctx.drawImage(off, 0, 0, 64, 64);
        c.classList.toggle("selected", l === layer && h === head);
      });
    }
    function draw() {
      const d = data(); thumbnails(d); strips(d); paint(d);
      view.dataset.interpShownHead = `${layer}.${head}`; view.dataset.interpShownSequence = meta.sequences.find(s => s.part === seq).index;
    }
    draw();
  }

  // ---- tokens: text coloured by a per-token quantity ----
  function tokens(view) {
    const meta = part(view, "meta"), body = view.querySelector(".interp-body");
    let seq = meta.sequences[0].part, q = meta.quantities[0].name;
    const text = el("div", { class: "interp-strip", "data-interp-strip": "values" }), key = el("div");
    body.append(el("div", { class: "interp-controls" },
      select("quantity", "quantity", meta.quantities.map(x => [x.name, x.name]), q, v => { q = v; draw(); }),
      select("sequence", "sequence", meta.sequences.map(s => [s.part, `${s.index} (${s.length} tokens)`]), seq, v => { seq = v; draw(); })), text, key);
    function draw() {
      const d = part(view, seq), range = meta.quantities.find(x => x.name === q), colour = scale(range.min, range.max), values = d.values[q] ?? [];
      text.replaceChildren();
      d.tokens.forEach((t, p) => {
        const v = values[p] ?? null, span = el("span", { class: "interp-tok", "data-pos": p, text: t });
        if (v != null) span.dataset.value = String(v);
        span.style.background = colour(v);
        span.addEventListener("mouseenter", ev => showTip(ev, `${label(d.tokens, p)}\n${q} = ${fmt(v)}`));
        span.addEventListener("mouseleave", hideTip);
        text.append(span);
      });
      key.replaceChildren(legend(range.min, range.max, q));
      view.dataset.interpShownQuantity = q; view.dataset.interpShownSequence = meta.sequences.find(s => s.part === seq).index;
    }
    draw();
  }

  // ---- heatmap: a matrix with hover values, one facet at a time ----
  function heatmap(view) {
    const d = part(view, "data"), body = view.querySelector(".interp-body");
    let facet = 0;
    const table = el("table", { class: "interp-heatmap" }), key = el("div");
    if (d.facets.length > 1) body.append(el("div", { class: "interp-controls" }, select("facet", d.facetTitle, d.facets.map((f, i) => [String(i), f.name]), "0", v => { facet = +v; draw(); })));
    body.append(table, key);
    function draw() {
      const f = d.facets[facet], flat = f.values.flat().filter(v => v != null), colour = scale(Math.min(...flat), Math.max(...flat));
      const labelled = d.rows.length * d.cols.length <= 400;   // small matrices show their numbers in the cells
      const head = el("tr", {}, el("th", { text: `${d.rowTitle} \\ ${d.colTitle}` }), ...d.cols.map(c => el("th", { text: c })));
      table.replaceChildren(head);
      d.rows.forEach((r, i) => {
        const tr = el("tr", {}, el("th", { text: r }));
        d.cols.forEach((c, j) => {
          const v = f.values[i][j], td = el("td", { "data-row": r, "data-col": c });
          if (v != null) td.dataset.value = String(v);
          td.style.background = colour(v);
          if (labelled && v != null) { td.textContent = v.toFixed(Math.abs(v) >= 100 ? 0 : 3); if (rgb(td.style.background).reduce((a, b) => a + b) < 400) td.style.color = "#fff"; }
          td.addEventListener("mouseenter", ev => showTip(ev, `${f.name}\n${d.rowTitle} ${r}, ${d.colTitle} ${c}: ${fmt(v)}`));
          td.addEventListener("mouseleave", hideTip);
          tr.append(td);
        });
        table.append(tr);
      });
      key.replaceChildren(legend(Math.min(...flat), Math.max(...flat), f.name));
      view.dataset.interpShownFacet = f.name;
    }
    draw();
  }

  // ---- logit lens: the top prediction per layer and position, coloured by its probability ----
  function logitLens(view) {
    const meta = part(view, "meta"), body = view.querySelector(".interp-body");
    let seq = meta.sequences[0].part;
    const table = el("table", { class: "interp-lens" });
    body.append(el("div", { class: "interp-controls" },
      select("sequence", "sequence", meta.sequences.map(s => [s.part, `${s.index} (${s.length} tokens)`]), seq, v => { seq = v; draw(); })), table, legend(0, 1, "probability of the top token"));
    const colour = scale(0, 1);
    function draw() {
      const d = part(view, seq);
      table.replaceChildren(el("tr", {}, el("th", { text: `${meta.layerTitle} \\ position` }), ...d.tokens.map((t, p) => el("th", { text: label(d.tokens, p) }))));
      d.layers.forEach((name, i) => {
        const tr = el("tr", {}, el("th", { text: name }));
        d.top[i].forEach((preds, p) => {
          const best = preds[0], td = el("td", { "data-layer": name, "data-pos": p, text: best ? best[0] : "" });
          if (best) { td.dataset.value = String(best[1]); td.style.background = colour(best[1]); }
          td.addEventListener("mouseenter", ev => showTip(ev, `${name}, after ${label(d.tokens, p)}:\n${preds.map(([t, pr], r) => `${r + 1}. ${JSON.stringify(t)} ${fmt(pr)}`).join("\n")}`));
          td.addEventListener("mouseleave", hideTip);
          tr.append(td);
        });
        table.append(tr);
      });
      view.dataset.interpShownSequence = meta.sequences.find(s => s.part === seq).index;
    }
    draw();
  }

  // ---- feature cards: an SAE feature's density, top contexts and logit effects ----
  function feature(view) {
    const meta = part(view, "meta"), body = view.querySelector(".interp-body");
    let current = meta.features[0].part;
    const card = el("div", { class: "interp-card" });
    body.append(el("div", { class: "interp-controls" },
      select("feature", "feature", meta.features.map(f => [f.part, `${f.feature} (density ${fmt(f.density)})`]), current, v => { current = v; draw(); })), card);
    function draw() {
      const f = part(view, current), colour = scale(0, f.maxActivation || 1);
      const contexts = f.contexts.map((c, r) => {
        const line = el("div", { class: "interp-strip", "data-interp-strip": "context", "data-rank": r + 1 });
        c.tokens.forEach((t, i) => {
          const v = c.acts[i], span = el("span", { class: "interp-tok" + (i === c.at ? " focus" : ""), "data-pos": c.start + i, text: t });
          if (v != null) span.dataset.value = String(v);
          span.style.background = colour(v);
          span.addEventListener("mouseenter", ev => showTip(ev, `sequence ${c.sequence}, position ${c.start + i}: ${JSON.stringify(t)}\nfeature ${f.feature} = ${fmt(v)}`));
          span.addEventListener("mouseleave", hideTip);
          line.append(span);
        });
        return line;
      });
      const effects = (title, direction, list) => el("div", {}, el("b", { text: title }),
        el("ol", {}, ...list.map(([t, v], r) => el("li", { "data-direction": direction, "data-rank": r + 1, "data-value": String(v), text: `${JSON.stringify(t)} ${fmt(v)}` }))));
      card.replaceChildren(el("h4", { text: `feature ${f.feature}` }),
        el("div", { class: "interp-legend", text: f.stats.map(([k, v]) => `${k} ${fmt(v)}`).join(" · ") }),
        el("b", { text: "top contexts" }), ...contexts,
        el("div", { class: "interp-effects" }, effects("promotes", "promoted", f.positive), effects("suppresses", "suppressed", f.negative)));
      view.dataset.interpShownFeature = f.feature;
    }
    draw();
  }

  const kinds = { attention, tokens, heatmap, "logit-lens": logitLens, feature };
  function start() {
    document.body.append(tip);
    for (const view of document.querySelectorAll("[data-interp-view]")) {
      try { kinds[view.dataset.interpView](view); }
      catch (e) { view.querySelector(".interp-body").append(el("p", { class: "interp-error", text: String(e) })); throw e; }
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
