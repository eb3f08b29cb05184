// The buildset page's live parts: while the buildset is not done, the
// script reads /api/v1/buildsets/{id} every second and patches the graph's
// nodes (data-state, fill, state text), the timeline's bars, the builds
// table and the header in place; once it is done, it swaps in the
// server's final graph and timeline. It also drives the cancel and re-run
// buttons, with a token kept in sessionStorage.
import {badge, buildState, fetchPage, fmtDuration, fmtTime, linkIDs, span, stateClass, svg, swapParts} from './common.js';
import './hosts.js';

const PERIOD = 1000;
const TOKEN_KEY = 'sortie-token';
const facts = document.getElementById('bs-facts');
const id = facts.dataset.id;
let done = facts.dataset.done === 'true';

const graph = document.getElementById('graph');
const colours = graph ? JSON.parse(graph.dataset.colours || '{}') : {};
const nodes = new Map();
if (graph) for (const g of graph.querySelectorAll('g.node')) nodes.set(g.dataset.job, g);
const timeline = document.getElementById('timeline');
const bars = new Map();
if (timeline) for (const r of timeline.querySelectorAll('rect.bar')) bars.set(r.dataset.job, r);
const rows = new Map();
for (const tr of document.querySelectorAll('#builds tbody tr[data-job]')) rows.set(tr.dataset.job, tr);

function fill(state) { return colours[state] || colours.WAITING || '#e2e5ea'; }

function updateNode(job, state) {
  const g = nodes.get(job);
  if (!g || g.getAttribute('data-state') === state) return;
  g.setAttribute('data-state', state);
  const rect = g.querySelector('rect');
  if (rect) rect.setAttribute('fill', fill(state));
  const t = g.querySelector('text.state');
  if (t) t.textContent = state;
  const title = g.querySelector('title');
  if (title) title.textContent = title.textContent.replace(/^([^:]*): [A-Z_]+/, `$1: ${state}`);
}

function updateRow(b, state, now) {
  const tr = rows.get(b.job);
  if (!tr) return;
  const set = (cls, v) => {
    const td = tr.querySelector('td.' + cls);
    if (td && td.textContent !== v) td.textContent = v;
  };
  const st = tr.querySelector('td.state');
  if (st && st.textContent !== state) st.replaceChildren(badge(state));
  set('attempt', b.attempt ? String(b.attempt) : '–');
  set('started', fmtTime(b.started_at));
  const d = span(b.started_at, b.finished_at, now);
  set('duration', d === null ? '' : fmtDuration(d));
  const reason = tr.querySelector('td.reason');
  if (b.reason && reason && reason.dataset.reason !== b.reason) {
    reason.replaceChildren(...linkIDs(b.reason));
    reason.dataset.reason = b.reason;
  }
}

// The timeline: bars from the first start to the last end (now while it runs).
function updateTimeline(bs, now) {
  if (!timeline) return;
  const label = +timeline.dataset.label, width = +timeline.dataset.width;
  let t0 = timeline.dataset.t0 ? +timeline.dataset.t0 : null;
  const starts = bs.builds.map((b) => b.started_at).filter(Boolean).map(Date.parse);
  if (bs.started_at) starts.push(Date.parse(bs.started_at));
  if (starts.length) t0 = t0 === null ? Math.min(...starts) : Math.min(t0, ...starts);
  if (t0 === null) return;
  timeline.dataset.t0 = String(t0);
  let t1 = bs.state === 'DONE' ? t0 : now;
  for (const t of [bs.finished_at, ...bs.builds.map((b) => b.finished_at)]) {
    if (t) t1 = Math.max(t1, Date.parse(t));
  }
  t1 = Math.max(t1, t0 + 1000);
  const x = (t) => label + (t - t0) / (t1 - t0) * width;
  for (const b of bs.builds) {
    const r = bars.get(b.job);
    if (!r) continue;
    const state = buildState(b);
    r.setAttribute('data-state', state);
    r.setAttribute('fill', fill(state));
    if (b.started_at) {
      const x0 = x(Date.parse(b.started_at));
      const x1 = x(b.finished_at ? Date.parse(b.finished_at) : now);
      r.setAttribute('x', x0.toFixed(1));
      r.setAttribute('width', Math.max(x1 - x0, 2).toFixed(1));
    }
    const title = r.querySelector('title');
    if (title) {
      let s = `${b.job}: ${state}`;
      const d = span(b.started_at, b.finished_at, now);
      if (d !== null) s += ', ' + fmtDuration(d);
      if (b.reason) s += ` (${b.reason})`;
      if (r.classList.contains('critical')) s += '; critical path';
      title.textContent = s;
    }
  }
  // The axis.
  const ticks = timeline.querySelector('g.ticks');
  if (!ticks) return;
  const steps = [100, 250, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5];
  const d = t1 - t0;
  const step = steps.find((s) => d / s <= 6) || 1728e5;
  const height = timeline.getAttribute('height');
  const top = 28;
  const out = [];
  for (let k = 0; k <= d; k += step) {
    const tx = x(t0 + k).toFixed(1);
    out.push(svg('line', {class: 'tick', x1: tx, x2: tx, y1: top - 6, y2: height}));
    out.push(svg('text', {class: 'tick', x: tx, y: top - 10}, '+' + fmtDuration(k)));
  }
  ticks.replaceChildren(...out);
}

function updateHeader(bs, now) {
  const state = bs.state === 'DONE' ? bs.result : bs.state;
  const e = document.getElementById('bs-state');
  if (e && e.getAttribute('data-state') !== state) {
    e.setAttribute('data-state', state);
    e.className = 'badge ' + stateClass(state);
    e.textContent = state;
  }
  const set = (id, v) => { const x = document.getElementById(id); if (x && x.textContent !== v) x.textContent = v; };
  set('bs-started', bs.started_at ? fmtTime(bs.started_at) : 'not yet');
  set('bs-finished', bs.finished_at ? fmtTime(bs.finished_at) : 'not yet');
  const d = span(bs.started_at, bs.finished_at, now);
  set('bs-duration', d === null ? '–' : fmtDuration(d));
}

function apply(bs) {
  const now = Date.now();
  for (const b of bs.builds) {
    const state = buildState(b);
    updateNode(b.job, state);
    updateRow(b, state, now);
  }
  updateTimeline(bs, now);
  updateHeader(bs, now);
  actions(bs);
  const finished = bs.state === 'DONE' && !done;
  const failing = failedJobs(bs);
  if (finished) {
    done = true;
    facts.dataset.done = 'true';
    swapFinal();
  } else if (failing !== shownFailures) {
    swapFailures();
  }
  shownFailures = failing;
}

// The failure summary starts the page once a build failed: the server
// renders it with the end of each failed build's log.
const FAILED = new Set(['FAILURE', 'TIMED_OUT', 'ERROR', 'RETRY_LIMIT']);
function failedJobs(bs) {
  return bs.builds.filter((b) => FAILED.has(b.result)).map((b) => b.job).join(' ');
}
let shownFailures = [...document.querySelectorAll('#failure-summary article.failure')].map((a) => a.dataset.job).join(' ');

function placeFailures(doc) {
  const next = doc.getElementById('failure-summary');
  if (next && !document.getElementById('failure-summary')) {
    facts.before(document.importNode(next, true));
    return;
  }
  swapParts(doc, ['failure-summary']);
}

async function swapFailures() {
  const doc = await fetchPage(location.pathname);
  if (doc) placeFailures(doc);
}

// canRerun says, as the server's pages.go does, whether the API's re-run
// applies: the buildset is done, its graph was made, and some build did
// not succeed.
function canRerun(bs) {
  return bs.state === 'DONE' && bs.result !== 'CONFIG_ERROR' && bs.builds.some((b) => b.result !== 'SUCCESS');
}

// actions shows the buttons that apply to the buildset as it is now, and
// the form only when one does.
function actions(bs) {
  const cancel = document.getElementById('cancel'), rerun = document.getElementById('rerun');
  if (!cancel || !rerun) return;
  cancel.hidden = bs.state === 'DONE';
  rerun.hidden = !canRerun(bs);
  showForm();
}

function showForm() {
  const form = document.getElementById('actions');
  const cancel = document.getElementById('cancel'), rerun = document.getElementById('rerun');
  if (form && cancel && rerun) form.hidden = cancel.hidden && rerun.hidden;
}

// Once the buildset is done, the server's render marks the critical path
// as run (graph.Plan.RunPath) where the page marked the estimate: swap in
// its graph, timeline and the note that names the path, and its failure
// summary.
async function swapFinal() {
  const doc = await fetchPage(location.pathname);
  if (!doc) return; // the page keeps the estimate; a reload shows the path as run
  swapParts(doc, ['graph', 'timeline', 'critical-note']);
  placeFailures(doc);
}

async function poll() {
  if (done) return;
  try {
    const r = await fetch('/api/v1/buildsets/' + encodeURIComponent(id), {headers: {Accept: 'application/json'}, cache: 'no-store'});
    if (r.ok) apply(await r.json());
  } catch (e) {
    // The server may be restarting: try again at the next tick.
  } finally {
    if (!done) setTimeout(poll, PERIOD);
  }
}

if (!done) setTimeout(poll, PERIOD);

// ---- Cancel and re-run -----------------------------------------------------

const form = document.getElementById('actions');
if (form) {
  showForm();
  const token = document.getElementById('token');
  const status = document.getElementById('action-status');
  try { token.value = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage off */ }
  token.addEventListener('input', () => {
    try { sessionStorage.setItem(TOKEN_KEY, token.value); } catch (e) { /* storage off */ }
  });
  form.addEventListener('submit', (e) => e.preventDefault());

  const call = async (what, button) => {
    if (!token.value.trim()) {
      status.textContent = 'Enter an API token first.';
      token.focus();
      return;
    }
    button.disabled = true;
    status.textContent = what === 'cancel' ? 'Cancelling…' : 'Starting a re-run…';
    try {
      const r = await fetch(`/api/v1/buildsets/${encodeURIComponent(id)}/${what}`, {
        method: 'POST',
        headers: {'Authorization': 'Bearer ' + token.value.trim(), 'Content-Type': 'application/json'},
        body: JSON.stringify({by: 'web UI'}),
      });
      let body = {};
      try { body = await r.json(); } catch (e) { /* not JSON */ }
      if (r.status === 401) {
        status.textContent = 'The token was refused.';
      } else if (!r.ok) {
        status.textContent = (body.error || 'HTTP ' + r.status);
      } else if (what === 'rerun' && body.buildset) {
        status.textContent = 'Re-run started: opening it.';
        location.assign('/buildsets/' + encodeURIComponent(body.buildset));
      } else {
        status.textContent = 'Cancelling: the builds are being stopped.';
      }
    } catch (e) {
      status.textContent = 'The request failed: ' + e.message;
    } finally {
      button.disabled = false;
    }
  };
  const cancel = document.getElementById('cancel');
  const rerun = document.getElementById('rerun');
  cancel.addEventListener('click', () => call('cancel', cancel));
  rerun.addEventListener('click', () => call('rerun', rerun));
}
