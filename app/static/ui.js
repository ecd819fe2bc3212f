// The page: versions and metrics, the explain form (its profile and context inputs follow the
// version's feature schema), CTR bars, the attention heatmap and the training report. Plain
// DOM code, no framework and no network beyond this service.
"use strict";

const $ = (selector) => document.querySelector(selector);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 4) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–";
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "–";
}

function ids(text) {
  return text.split(/[\s,]+/).filter((id) => id.length > 0);
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(describeError(response.status, body));
  return body;
}

function describeError(status, body) {
  if (Array.isArray(body.detail)) {
    const fields = body.detail.map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`);
    return `${status}: ${fields.join("; ")}`;
  }
  return `${status} ${body.error || ""}: ${body.detail || "request failed"}`;
}

// ---- versions -------------------------------------------------------------------------

async function showVersions() {
  const listing = await getJson("/v1/versions");
  const shown = listing.serving || listing.active;
  $("#status").textContent =
    `active version: ${listing.active || "none"} · this replica serves: ${listing.serving || "none"}` +
    canaryText(listing);
  const body = $("#versions tbody");
  body.replaceChildren(...listing.versions.map(versionRow));
  const active = listing.versions.find((v) => v.version === shown);
  showActiveMetrics(active);
  if (shown) await showVersionDetail(shown);
}

// The canary, its share, and what each arm served in this replica.
function canaryText(listing) {
  if (!listing.canary) return " · no canary";
  const arms = Object.entries(listing.arms || {}).map(
    ([version, arm]) => `${version}: ${arm.requests} requests, mean score ${fmt(arm.mean_score)}`,
  );
  return ` · canary ${listing.canary.version} on ${listing.canary.percent}% of users` +
    (arms.length ? ` (${arms.join("; ")})` : "");
}

function versionRow(v) {
  const m = v.metrics || {};
  const cells = [
    v.version, when(v.published_at), when(v.activated_at), v.pooling === "sum" ? "BaseModel" : "DIN",
    fmt(m.test_auc), fmt(m.test_gauc), fmt(m.baseline_test_auc), fmt(m.baseline_test_gauc),
  ];
  return el("tr", { className: v.active ? "active" : "" }, cells.map((c) => el("td", { textContent: c })));
}

function showActiveMetrics(version) {
  const m = (version && version.metrics) || {};
  const items = [
    ["version", version ? version.version : "none"],
    ["test AUC", fmt(m.test_auc)],
    ["test GAUC", fmt(m.test_gauc)],
    ["published", when(version && version.published_at)],
    ["last activated", when(version && version.activated_at)],
  ];
  if (m.baseline) items.push([`${m.baseline} GAUC`, fmt(m.baseline_test_gauc)]);
  $("#active-metrics").replaceChildren(
    ...items.map(([name, value]) => el("div", {}, [el("dt", { textContent: name }), el("dd", { textContent: value })])),
  );
}

async function showVersionDetail(version) {
  const detail = await getJson(`/v1/versions/${encodeURIComponent(version)}`);
  const select = $("#demo-user");
  for (const user of detail.demo_users) select.append(el("option", { value: user, textContent: user }));
  if (!$("#candidates").value) $("#candidates").value = detail.demo_items.join(" ");
  showFieldInputs(detail.schema);
  showReport(version, detail.report);
}

// One text input per profile field (the user id field is the user id itself) and per context
// field of the served version's schema.
function showFieldInputs(schema) {
  const features = schema.features;
  const profile = features.user.filter((f) => f.name !== schema.user_id_field);
  fieldInputs("#user-fields", "user", profile);
  fieldInputs("#context-fields", "context", features.context);
}

function fieldInputs(selector, kind, fields) {
  const box = $(selector);
  box.hidden = fields.length === 0;
  box.querySelector(".field-inputs").replaceChildren(
    ...fields.map((f) =>
      el("label", { textContent: f.name }, [
        el("input", { id: `${kind}-${f.name}`, name: f.name, className: `${kind}-field` }),
      ]),
    ),
  );
}

function fieldValues(kind) {
  const values = {};
  for (const input of document.querySelectorAll(`input.${kind}-field`)) {
    if (input.value.trim()) values[input.name] = input.value.trim();
  }
  return values;
}

async function showReport(version, files) {
  const base = `/v1/versions/${encodeURIComponent(version)}/report/`;
  $("#report-missing").hidden = files.length > 0;
  if (files.includes("report.png")) {
    $("#report-image").src = base + "report.png";
    $("#report-image").hidden = false;
  }
  if (files.includes("report.md")) {
    const response = await fetch(base + "report.md");
    if (response.ok) {
      $("#report-summary").replaceChildren(...markdownBlocks(await response.text()));
      $("#report-summary").hidden = false;
    }
  }
}

// The report's markdown is ours (headings, pipe tables, paragraphs, the image link): render
// just that, as DOM nodes with text content, never as HTML.
function markdownBlocks(text) {
  const blocks = [];
  let table = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("|")) {
      const cells = line.split("|").slice(1, -1).map((c) => c.trim());
      if (cells.every((c) => /^:?-+:?$/.test(c))) continue; // the header separator
      if (!table) blocks.push((table = el("table", { className: "report-table" })));
      const tag = table.rows.length === 0 ? "th" : "td";
      table.append(el("tr", {}, cells.map((c) => el(tag, { textContent: c }))));
      continue;
    }
    table = null;
    const heading = /^(#+)\s+(.*)$/.exec(line);
    if (heading) blocks.push(el(`h${Math.min(heading[1].length + 2, 6)}`, { textContent: heading[2] }));
    else if (line.trim() && !line.startsWith("![")) blocks.push(el("p", { textContent: line }));
  }
  return blocks;
}

// ---- explain --------------------------------------------------------------------------

function explainRequest() {
  const request = {
    user_id: $("#user-id").value.trim(),
    candidates: ids($("#candidates").value).map((id) => ({ item_id: id })),
  };
  const history = ids($("#history").value);
  if (history.length) request.history = history.map((id) => ({ item_id: id }));
  for (const kind of ["user", "context"]) {
    const values = fieldValues(kind);
    if (Object.keys(values).length) request[kind] = values;
  }
  return request;
}

async function submitExplain(event) {
  event.preventDefault();
  const error = $("#error");
  error.hidden = true;
  $("#submit").disabled = true;
  try {
    const answer = await getJson("/v1/explain", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(explainRequest()),
    });
    showExplanation(answer);
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
  } finally {
    $("#submit").disabled = false;
  }
}

function label(item) {
  return item.title ? `${item.title} [${item.item_id}]` : item.item_id;
}

function fieldsText(item) {
  return Object.entries(item.fields || {}).map(([name, value]) => `${name}: ${value}`).join(" · ");
}

function describe(item) {
  const fields = fieldsText(item);
  return fields ? `${label(item)}\n${fields}` : label(item);
}

function unknownText(unknown) {
  const counted = Object.entries(unknown || {}).map(([field, count]) => `${field} ${count}`);
  return counted.length ? `unknown values: ${counted.join(", ")}` : "no unknown values";
}

let lastAnswer = null;

function showExplanation(answer) {
  lastAnswer = answer;
  $("#result").hidden = false;
  $("#result-meta").textContent =
    `scored by ${answer.version} · ${answer.history_length} behaviours from ${answer.history_source}` +
    ` · ${unknownText(answer.unknown_ids)} · pooling: ${answer.pooling}`;
  showBars(answer.candidates);
  showHeatmap(answer);
}

function showBars(candidates) {
  const top = Math.max(...candidates.map((c) => c.score), 1e-9);
  $("#bars").replaceChildren(
    ...candidates.map((c) =>
      el("div", { className: "bar-row" }, [
        el("span", { className: "bar-label", title: describe(c) }, [
          label(c),
          el("small", { className: "bar-fields", textContent: fieldsText(c) }),
        ]),
        el("div", { className: "bar-track" }, [
          el("div", { className: "bar", style: `width: ${(100 * c.score) / top}%` }),
        ]),
        el("span", { className: "bar-value", textContent: fmt(c.score) }),
      ]),
    ),
  );
}

function showHeatmap(answer) {
  const grid = $("#heatmap");
  const columns = answer.history.length;
  grid.style.gridTemplateColumns = `16rem repeat(${columns}, 1.1rem)`;
  const mode = $("#shading").value;
  const raw = answer.candidates.map((c) => weightRow(c, columns));
  const weights = mode === "pair" ? interaction(raw) : raw;
  const scales = weights.map((row) => (mode === "row" ? row : weights.flat()));
  const cells = [el("div", { className: "hm-corner" })];
  for (const behaviour of answer.history) {
    cells.push(el("div", { className: "hm-col", textContent: label(behaviour), title: describe(behaviour) }));
  }
  answer.candidates.forEach((candidate, row) => {
    const low = Math.min(...scales[row]);
    const high = Math.max(...scales[row]);
    cells.push(el("div", { className: "hm-row", textContent: label(candidate), title: describe(candidate) }));
    weights[row].forEach((value, col) => {
      const behaviour = answer.history[col];
      const weight = raw[row][col];
      cells.push(el("div", {
        className: "cell",
        title: `${describe(candidate)}\n× ${describe(behaviour)}\nweight ${fmt(weight)}`,
        style: `background: ${mode === "pair" ? diverging(value, low, high) : shade(value, low, high)}`,
      }));
    });
  });
  grid.replaceChildren(...cells);
}

function weightRow(candidate, columns) {
  const row = new Array(columns).fill(0);
  for (const b of candidate.behaviours) row[b.position] = b.weight;
  return row;
}

// A weight is mostly a candidate term plus a behaviour term (the activation unit's first layer
// is additive in them); what is left after removing both is what links this candidate to this
// behaviour in particular.
function interaction(rows) {
  const mean = (values) => values.reduce((sum, v) => sum + v, 0) / Math.max(values.length, 1);
  const rowMeans = rows.map(mean);
  const colMeans = rows[0].map((_, col) => mean(rows.map((row) => row[col])));
  const grand = mean(rowMeans);
  return rows.map((row, r) => row.map((v, c) => v - rowMeans[r] - colMeans[c] + grand));
}

function diverging(value, low, high) {
  const reach = Math.max(Math.abs(low), Math.abs(high), 1e-12);
  const t = Math.min(Math.abs(value) / reach, 1);
  return `hsl(${value >= 0 ? 2 : 214}, 70%, ${97 - 55 * t}%)`;
}

function shade(weight, low, high) {
  const t = high > low ? (weight - low) / (high - low) : 1;
  const lightness = 96 - 62 * t; // light for the lightest weight, deep red for the heaviest
  return `hsl(2, 70%, ${lightness}%)`;
}

// ---- start ------------------------------------------------------------------------------

function start() {
  $("#demo-user").addEventListener("change", (event) => {
    if (event.target.value) $("#user-id").value = event.target.value;
  });
  $("#explain-form").addEventListener("submit", submitExplain);
  $("#shading").addEventListener("change", () => lastAnswer && showHeatmap(lastAnswer));
  showVersions().catch((failure) => {
    $("#status").textContent = `could not read the versions: ${failure.message}`;
  });
}

document.addEventListener("DOMContentLoaded", start);
