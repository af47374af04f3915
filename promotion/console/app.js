// The approver console: a client of the JSON API, nothing more. Everything that comes from the API is put on the
// page as text (textContent, createTextNode), never as HTML, so a tag, a comment or a name full of markup shows
// literally. No framework, no build step, nothing from a CDN.

const API = "/api";
const REFRESH_MS = 20000;
const view = { me: null, skew: 0, filters: { state: "", model: "" }, continuation: null, rows: [] };

// --- helpers ------------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + view.skew; // the app's clock: the server said what time it is
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—"); // the browser's time zone
const same = (a, b) => String(a || "").trim().toLowerCase() === String(b || "").trim().toLowerCase();

function duration(ms) {
  const minutes = Math.round(Math.abs(ms) / 60000);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function state(value) {
  return el("span", { class: `state state-${value}`, text: String(value).replace(/_/g, " ") });
}

function link(params, text) {
  const href = `/api/console?${new URLSearchParams(params)}`;
  return el("a", { href, onclick: (event) => { event.preventDefault(); navigate(params); } }, text);
}

function notice(message, ok = false) {
  const box = $("notice");
  box.textContent = message || "";
  box.className = ok ? "ok" : "";
  box.hidden = !message;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (options.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(API + path, init);
  if (response.status === 401) {
    // Signed out (or the session ended): the platform signs in, then brings the browser back to this deep link.
    const back = window.location.pathname + window.location.search;
    window.location.assign(`/.auth/login/aad?post_login_redirect_uri=${encodeURIComponent(back)}`);
    throw new ApiError(401, "signing in…");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const message = answer && typeof answer.error === "string" ? answer.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return answer;
}

// --- who am I -----------------------------------------------------------------------------------------------

async function loadMe() {
  const me = await api("/me");
  view.me = me;
  view.skew = new Date(me.now).getTime() - Date.now();
  const roles = me.roles.length ? me.roles.join(", ") : "no app roles";
  const may = me.may_approve ? "may approve" : "may not approve";
  $("me").textContent = `${me.name} · ${roles} · ${may} (${me.required_approvals} approval(s) needed)`;
}

function isMine(promotion) {
  return same(promotion.requested_by, view.me && view.me.name);
}

function approvedByMe(promotion) {
  return (promotion.approvals || []).some((name) => same(name, view.me && view.me.name));
}

function expiresAt(promotion) {
  return new Date(promotion.created_at).getTime() + view.me.approval_ttl_hours * 3600000;
}

// --- waiting for you ----------------------------------------------------------------------------------------

async function loadWaiting() {
  const box = $("waiting-list");
  if (!view.me.may_approve) {
    box.replaceChildren(el("p", { class: "muted", text: "You are not an approver under the promotion policy, so nothing waits for you." }));
    return;
  }
  let pending = [];
  let token = null;
  for (let pages = 0; pages < 10; pages += 1) { // at most 2,000 open requests: far more than people decide
    const params = new URLSearchParams({ state: "pending_approval", page_size: "200" });
    if (token) params.set("continuation", token);
    const page = await api(`/promotions?${params}`);
    pending = pending.concat(page.promotions);
    token = page.continuation;
    if (!token) break;
  }
  const waiting = pending
    .filter((p) => !approvedByMe(p) && !(view.me.require_distinct_approver && isMine(p)))
    .sort((a, b) => expiresAt(a) - expiresAt(b));
  if (!waiting.length) {
    box.replaceChildren(el("p", { class: "muted", text: "Nothing waits for your decision." }));
    return;
  }
  box.replaceChildren(el("div", { class: "cards" }, waiting.map(waitingCard)));
}

function timeLeft(promotion) {
  const left = expiresAt(promotion) - now();
  return left > 0
    ? el("span", { text: `${duration(left)} left` })
    : el("span", { class: "late", text: `expired ${duration(left)} ago` });
}

function progress(promotion) {
  const count = (promotion.approvals || []).length;
  const names = count ? `: ${promotion.approvals.join(", ")}` : "";
  return `${count} of ${view.me.required_approvals}${names}`;
}

function waitingCard(promotion) {
  const model = `${promotion.model_name}:${promotion.model_version}`;
  return el(
    "article",
    { class: "card", "data-promotion": promotion.id },
    el("h3", {}, link({ promotion: promotion.id }, model)),
    el(
      "dl",
      {},
      el("dt", { text: "Requested by" }), el("dd", { text: promotion.requested_by }),
      el("dt", { text: "Reason" }), el("dd", { text: promotion.reason || "—" }),
      el("dt", { text: "Age" }), el("dd", { text: duration(now() - new Date(promotion.created_at).getTime()) }),
      el("dt", { text: "Expires" }), el("dd", {}, timeLeft(promotion)),
      el("dt", { text: "Approvals" }), el("dd", { text: progress(promotion) }),
    ),
  );
}

// --- all promotions -----------------------------------------------------------------------------------------

async function loadAll({ more = false } = {}) {
  const params = new URLSearchParams({ page_size: "50" });
  if (view.filters.state) params.set("state", view.filters.state);
  if (view.filters.model) params.set("model", view.filters.model);
  if (more && view.continuation) params.set("continuation", view.continuation);
  const page = await api(`/promotions?${params}`);
  view.rows = more ? view.rows.concat(page.promotions) : page.promotions;
  view.continuation = page.continuation;
  const body = $("all-table").tBodies[0];
  body.replaceChildren(
    ...(view.rows.length
      ? view.rows.map(allRow)
      : [el("tr", {}, el("td", { colspan: "5", class: "muted", text: "No promotion matches." }))]),
  );
  $("more").hidden = !view.continuation;
}

function allRow(p) {
  return el(
    "tr",
    { "data-promotion": p.id },
    el("td", {}, link({ promotion: p.id }, `${p.model_name}:${p.model_version}`)),
    el("td", {}, state(p.state)),
    el("td", { text: p.requested_by }),
    el("td", { text: when(p.created_at) }),
    el("td", { text: progress(p) }),
  );
}

// --- one promotion, one model version -----------------------------------------------------------------------

async function loadDetail() {
  const query = new URLSearchParams(window.location.search);
  const section = $("detail");
  const id = query.get("promotion");
  const name = query.get("model");
  const version = query.get("version");
  if (!id && !(name && version)) {
    section.hidden = true;
    return;
  }
  let promotion = null;
  let ref = { name, version };
  if (id) {
    promotion = await api(`/promotions/${encodeURIComponent(id)}`);
    ref = { name: promotion.model_name, version: promotion.model_version };
  }
  let status = null;
  try {
    status = await api(`/models/${encodeURIComponent(ref.name)}/versions/${encodeURIComponent(ref.version)}`);
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  $("detail-title").textContent = promotion
    ? `Promotion of ${ref.name}:${ref.version}`
    : `Model ${ref.name}:${ref.version}`;
  $("detail-body").replaceChildren(
    promotion ? promotionPanel(promotion, status) : null,
    status ? statusPanels(status, promotion) : el("p", { class: "muted", text: "Nothing is known about this model version." }),
  );
  section.hidden = false;
}

function promotionPanel(p, status) {
  const rows = [
    ["State", state(p.state)],
    ["Requested by", p.requested_by],
    ["Reason", p.reason || "—"],
    ["Requested", when(p.created_at)],
    ["Approvals", progress(p)],
  ];
  if (p.state === "pending_approval") rows.push(["Expires", timeLeft(p)]);
  if (p.rejected_by) rows.push(["Rejected by", p.rejected_by]);
  if (p.error) rows.push([p.state === "voided" ? "Voided because" : "Error", p.error]);
  if (p.deployment && p.deployment.endpoint) {
    rows.push(["Deployment", `${p.deployment.endpoint} / ${p.deployment.deployment}`]);
  }
  if (p.artifact) rows.push(["Artifact", fingerprint(p.artifact.fingerprint)]);
  return el(
    "div",
    { class: "panel", id: "promotion", "data-state": p.state },
    el("dl", {}, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])),
    p.state === "voided" ? el("p", { class: "muted", text: "Nothing deploys from a voided promotion: request production sharing again to start over." }) : null,
    p.artifact ? requestedTags(p.artifact, status && status.registry) : null,
    actions(p),
    el("h3", { text: "History" }),
    historyTable(p.history),
  );
}

// The fingerprint in short (enough to tell two apart at a glance), the whole value one click away.
function fingerprint(value) {
  const text = String(value || "");
  const short = text.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, "$1…");
  if (short === text) return el("code", { class: "fingerprint", text });
  return el(
    "details",
    { class: "fingerprint" },
    el("summary", {}, el("code", { title: text, text: short })),
    el("code", { class: "full", text }),
  );
}

// Tags recorded at request time that differ now, and new ones (only when none was left out of the record, since
// a tag left out cannot be told from a new one): the same comparison the API makes before each approval.
function tagChanges(recorded, omitted, current) {
  const before = recorded || {};
  const names = new Set(Object.keys(before));
  if (!omitted) Object.keys(current).forEach((name) => names.add(name));
  return [...names]
    .sort()
    .filter((name) => before[name] !== current[name])
    .map((name) => ({ name, requested: before[name] ?? null, now: current[name] ?? null }));
}

function changeList(changes) {
  const shown = (value) => (value === null || value === undefined ? "(not set)" : value);
  return el(
    "ul",
    { class: "changes" },
    changes.map((c) => el("li", {}, el("code", { text: c.name }), ": ", el("span", { class: "was", text: shown(c.requested) }), " → ", el("span", { class: "now", text: shown(c.now) }))),
  );
}

function requestedTags(artifact, registry) {
  const omitted = artifact.tags_omitted || 0;
  const changes = registry ? tagChanges(artifact.tags, omitted, registry.tags || {}) : [];
  return el(
    "div",
    { id: "artifact" },
    changes.length
      ? el(
          "div",
          { class: "changed", id: "tag-changes", role: "note" },
          el("h3", { text: "Tags changed since the request" }),
          el("p", { class: "muted", text: "What the registry says now differs from what was recorded when production sharing was requested:" }),
          changeList(changes),
        )
      : null,
    el(
      "details",
      { id: "requested-tags" },
      el("summary", { text: "Tags as seen at request time" }),
      tagList(artifact.tags),
      omitted ? el("p", { class: "muted", text: `${omitted} more tag(s) were too large to record` }) : null,
    ),
  );
}

function actions(p) {
  const canDecide = p.state === "pending_approval" && view.me.may_approve;
  const canRollBack = p.state === "deployed";
  if (!canDecide && !canRollBack) return null;
  const comment = el("textarea", { id: "comment", name: "comment", rows: "2" });
  const form = el(
    "form",
    { class: "actions stack", id: "decide", onsubmit: (event) => event.preventDefault() },
    el("label", {}, canDecide ? "Comment (required to reject)" : "Comment (required)", comment),
    el(
      "div",
      { class: "row" },
      canDecide ? el("button", { type: "button", class: "primary", id: "approve", onclick: () => decide(p, "approve", comment) }, "Approve") : null,
      canDecide ? el("button", { type: "button", class: "danger", id: "reject", onclick: () => decide(p, "reject", comment) }, "Reject") : null,
      canRollBack ? el("button", { type: "button", class: "danger", id: "rollback", onclick: () => decide(p, "rollback", comment) }, "Roll back") : null,
    ),
  );
  return form;
}

async function decide(p, action, comment) {
  const text = comment.value.trim();
  const body = text ? { comment: text } : {};
  const buttons = document.querySelectorAll("#decide button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const answer = await api(`/promotions/${encodeURIComponent(p.id)}/${action}`, { body });
    await refresh();
    notice(`Promotion of ${answer.model_name}:${answer.model_version} is ${answer.state.replace(/_/g, " ")}.`, true);
  } catch (error) {
    notice(error.message); // the API's own words: self-approval, not an approver, already decided, expired
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function historyTable(history) {
  return el(
    "div",
    { class: "scroll" },
    el(
      "table",
      { class: "history" },
      el("thead", {}, el("tr", {}, ["When", "Who", "What", "Comment"].map((h) => el("th", { scope: "col", text: h })))),
      el(
        "tbody",
        {},
        (history || []).map((entry) =>
          el(
            "tr",
            {},
            el("td", { text: when(entry.at) }),
            el("td", { text: entry.actor }),
            el("td", { text: entry.action }),
            el("td", {}, (entry.detail && (entry.detail.comment || entry.detail.reason)) || "", differences(entry.detail)),
          ),
        ),
      ),
    ),
  );
}

// What an approval or a void recorded about the registry version: both fingerprints, the parts that differ, and
// the tag differences the approver saw.
function differences(detail) {
  if (!detail) return null;
  const tags = Object.entries(detail.tags_changed || {}).map(([name, c]) => ({ name, requested: c.requested, now: c.now }));
  const content = detail.fingerprint_requested && detail.fingerprint_now !== detail.fingerprint_requested;
  if (!tags.length && !detail.fingerprint_requested) return null;
  return el(
    "div",
    { class: "differences" },
    detail.fingerprint_requested
      ? el(
          "dl",
          {},
          el("dt", { text: "At request" }), el("dd", {}, fingerprint(detail.fingerprint_requested)),
          el("dt", { text: "Now" }), el("dd", {}, detail.fingerprint_now ? fingerprint(detail.fingerprint_now) : "the version is gone"),
          content && (detail.changed_parts || []).length ? [el("dt", { text: "Differs in" }), el("dd", { text: detail.changed_parts.join(", ") })] : null,
        )
      : null,
    tags.length ? [el("p", { class: "muted", text: "Tags changed since the request:" }), changeList(tags)] : null,
  );
}

function tagList(tags) {
  const entries = Object.entries(tags || {});
  if (!entries.length) return el("p", { class: "muted", text: "no tags" });
  return el("dl", { class: "tags" }, entries.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

// A finding's expected or actual state, as text: {"traffic": {"blue": 90}} reads "traffic: blue 90%".
function described(state) {
  const parts = Object.entries(state || {}).map(([key, value]) => {
    if (value === null || value === undefined) return `${key}: none`;
    if (typeof value !== "object") return `${key}: ${value}`;
    const inner = Object.entries(value).map(([k, v]) => `${k} ${v}${key === "traffic" ? "%" : ""}`);
    return `${key}: ${inner.length ? inner.join(", ") : "none"}`;
  });
  return parts.length ? parts.join("; ") : "—";
}

function driftList(findings) {
  if (!findings.length) return el("p", { class: "muted", text: "no open drift finding" });
  return el(
    "ul",
    { id: "drift", class: "drift" },
    findings.map((f) =>
      el(
        "li",
        { "data-kind": f.kind },
        el("strong", { text: String(f.kind).replace(/_/g, " ") }),
        ` on ${f.endpoint}${f.deployment ? ` / ${f.deployment}` : ""} since ${when(f.detected_at)}`,
        f.promotion_id ? [" · ", link({ promotion: f.promotion_id }, "its promotion")] : null,
        el("dl", {}, el("dt", { text: "Expected" }), el("dd", { text: described(f.expected) }), el("dt", { text: "Actual" }), el("dd", { text: described(f.actual) })),
      ),
    ),
  );
}

function panel(title, id, ...children) {
  return el("div", { class: "panel", id }, el("h3", { text: title }), ...children);
}

function statusPanels(s, promotion) {
  const copy = s.copy;
  const serving = (s.serving || []).map((live) =>
    el(
      "div",
      { class: "live" },
      el("p", {}, el("strong", { text: live.endpoint }), live.exists ? (live.busy ? " (an operation is under way)" : "") : " does not exist yet"),
      live.traffic.length
        ? el("ul", {}, live.traffic.map((t) => el("li", { text: `${t.percent}% → ${t.model || "unknown model"} (${t.deployment})` })))
        : el("p", { class: "muted", text: "takes no traffic" }),
    ),
  );
  return el(
    "div",
    { class: "panels" },
    panel(
      "Production",
      "production",
      (s.production || []).length
        ? el("ul", {}, s.production.map((d) => el("li", { text: `${d.endpoint} / ${d.deployment}: ${d.traffic}% of the traffic (${d.state})` })))
        : el("p", { class: "muted", text: "not deployed" }),
      el("h3", { text: "Production serves now" }),
      serving.length ? serving : el("p", { class: "muted", text: "no endpoint to show" }),
      el("h3", { text: "Drift" }),
      driftList(s.drift || []),
    ),
    panel(
      "Staging source",
      "staging",
      s.staging
        ? [el("p", { text: `${s.staging.name}:${s.staging.version} (${s.staging.type})` }), el("p", { text: s.staging.description || "" }), tagList(s.staging.tags)]
        : el("p", { class: "muted", text: "not in the staging workspace" }),
    ),
    panel(
      "Policy verdict",
      "verdicts",
      (s.decisions || []).length
        ? el("ul", {}, s.decisions.map((d) =>
            el("li", {}, state(d.outcome), ` ${when(d.decided_at)}`, d.policy_digest ? ` · policy ${d.policy_digest}` : "",
              (d.reasons || []).length ? el("ul", {}, d.reasons.map((r) => el("li", { text: r }))) : el("span", { class: "muted", text: " · every rule passed" }))))
        : el("p", { class: "muted", text: "no decision recorded" }),
    ),
    panel(
      "Registry copy and lineage",
      "registry",
      copy ? el("p", {}, "copy ", state(copy.state), copy.error ? ` · ${copy.error}` : "") : null,
      s.registry ? tagList(s.registry.tags) : el("p", { class: "muted", text: "not in the registry" }),
    ),
    promotion
      ? null
      : panel(
          "Promotions",
          "promotions",
          (s.promotions || []).length
            ? el("ul", {}, s.promotions.map((p) => el("li", {}, link({ promotion: p.id }, when(p.created_at)), " ", state(p.state), ` requested by ${p.requested_by}`)))
            : el("p", { class: "muted", text: "never requested" }),
        ),
  );
}

// --- navigation and refresh ---------------------------------------------------------------------------------

function navigate(params) {
  window.history.pushState(null, "", `/api/console?${new URLSearchParams(params)}`);
  notice("");
  refresh().then(() => {
    if (!$("detail").hidden) $("detail-title").focus();
  });
}

let running = null;
async function refresh() {
  if (running) return running;
  document.body.setAttribute("aria-busy", "true");
  running = (async () => {
    try {
      if (!view.me) await loadMe();
      await Promise.all([loadWaiting(), loadAll(), loadDetail()]);
    } catch (error) {
      if (error.status !== 401) notice(error.message);
    } finally {
      running = null;
      document.body.removeAttribute("aria-busy");
    }
  })();
  return running;
}

function start() {
  $("refresh").addEventListener("click", () => { view.me = null; refresh(); });
  $("home").addEventListener("click", (event) => { event.preventDefault(); navigate({}); });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    view.filters = { state: $("filter-state").value, model: $("filter-model").value.trim() };
    loadAll().catch((error) => notice(error.message));
  });
  $("more").addEventListener("click", () => loadAll({ more: true }).catch((error) => notice(error.message)));
  $("request-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model_name: $("request-name").value.trim(), model_version: $("request-version").value.trim() };
    const reason = $("request-reason").value.trim();
    if (reason) body.reason = reason;
    try {
      const answer = await api("/promotions", { body });
      event.target.reset();
      navigate({ promotion: answer.id });
      notice(`Production sharing of ${answer.model_name}:${answer.model_version} requested.`, true);
    } catch (error) {
      notice(error.message);
    }
  });
  window.addEventListener("popstate", () => refresh());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  window.setInterval(() => { if (!document.hidden && !document.activeElement.closest("form")) refresh(); }, REFRESH_MS);
  refresh();
}

start();
