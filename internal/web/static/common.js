// Helpers shared by the pages' scripts.

/** el makes an element: el('a', {href: '/x', class: 'y'}, 'text', child). */
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** svg makes an SVG element. */
export function svg(tag, attrs, text) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** fmtDuration renders milliseconds as the server does: 450ms, 12.3s, 4m05s, 2h03m. */
export function fmtDuration(ms) {
  if (!(ms >= 0)) return '0s';
  if (ms < 1000) return Math.floor(ms) + 'ms';
  const s = ms / 1000;
  if (s < 10) return (Math.floor(s * 10) / 10).toFixed(1) + 's';
  if (s < 60) return Math.floor(s) + 's';
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 3600) return Math.floor(s / 60) + 'm' + pad(Math.floor(s) % 60) + 's';
  return Math.floor(s / 3600) + 'h' + pad(Math.floor(s / 60) % 60) + 'm';
}

/** fmtTime renders a time as the server does: 2006-01-02 15:04:05Z. */
export function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return d.toISOString().slice(0, 19).replace('T', ' ') + 'Z';
}

export function shortCommit(c) { return (c || '').slice(0, 10); }

/** shortID is the end of a buildset id (UUIDv7s made close together share their start). */
export function shortID(id) { return id && id.length > 8 ? id.slice(-8) : (id || ''); }

export function stateClass(s) { return 'state-' + (s || 'WAITING').toLowerCase().replaceAll('_', '-'); }

/** buildState is the state a build is drawn in. */
export function buildState(b) {
  if (!b) return 'WAITING';
  if (b.result) return b.result;
  return b.attempt > 0 ? 'RUNNING' : 'WAITING';
}

/** span is the milliseconds between two ISO times; to null means now. */
export function span(from, to, now) {
  if (!from) return null;
  const end = to ? Date.parse(to) : now;
  return end - Date.parse(from);
}

export function badge(state) {
  return el('span', {class: 'badge ' + stateClass(state)}, state);
}

export function pathEscape(s) { return encodeURIComponent(s); }

const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/g;

/**
 * linkIDs is text with every buildset id in it linked to its page, named
 * "buildset …<short id>", as the server's linkIDs renders it: an array of
 * nodes and strings for append().
 */
export function linkIDs(text) {
  const out = [];
  let last = 0;
  for (const m of (text || '').matchAll(UUID)) {
    out.push(text.slice(last, m.index));
    out.push(el('a', {class: 'bsref', href: '/buildsets/' + m[0], title: 'buildset ' + m[0]}, 'buildset …' + shortID(m[0])));
    last = m.index + m[0].length;
  }
  out.push((text || '').slice(last));
  return out.filter((x) => x !== '');
}

/**
 * tick counts on every running duration the server rendered
 * (span.elapsed[data-since]), once now and then every second.
 */
export function tick() {
  const now = Date.now();
  for (const e of document.querySelectorAll('.elapsed[data-since]')) {
    const since = Date.parse(e.dataset.since);
    if (isNaN(since)) continue;
    const v = fmtDuration(now - since);
    if (e.textContent !== v) e.textContent = v;
  }
  // Progress bars against an expected duration, and time left.
  for (const p of document.querySelectorAll('progress[data-since]')) {
    const since = Date.parse(p.dataset.since);
    if (!isNaN(since)) p.value = Math.min(now - since, p.max);
  }
  for (const e of document.querySelectorAll('.countdown[data-until]')) {
    const until = Date.parse(e.dataset.until);
    if (isNaN(until)) continue;
    const v = until > now ? `about ${fmtDuration(until - now)} left` : 'any moment now';
    if (e.textContent !== v) e.textContent = v;
  }
}

let ticking = null;
export function startTicking() {
  tick();
  if (!ticking) ticking = setInterval(tick, 1000);
}

/**
 * fetchPage reads the current page again from the server, parsed; null
 * when that fails (the page stays as it is).
 */
export async function fetchPage(url) {
  try {
    const r = await fetch(url || location.href, {cache: 'no-store', headers: {Accept: 'text/html'}});
    if (!r.ok) return null;
    return new DOMParser().parseFromString(await r.text(), 'text/html');
  } catch (e) {
    return null;
  }
}

/**
 * swapParts replaces each element of the page named by ids with the one of
 * the same id in doc, when they differ; an element doc no longer has is
 * removed. Focus stays on the same link or button when it was inside.
 */
export function swapParts(doc, ids) {
  for (const id of ids) {
    const cur = document.getElementById(id), next = doc.getElementById(id);
    if (!cur && !next) continue;
    if (cur && !next) { cur.remove(); continue; }
    if (!cur) continue; // where a new part goes is the caller's business
    if (cur.outerHTML === next.outerHTML) continue;
    const focused = document.activeElement && cur.contains(document.activeElement) ? document.activeElement : null;
    const key = focused ? focusKey(focused) : null;
    const imported = document.importNode(next, true);
    cur.replaceWith(imported);
    if (key) {
      const again = imported.querySelector(key);
      if (again) again.focus({preventScroll: true});
    }
  }
  tick();
}

function focusKey(e) {
  if (e.id) return '#' + CSS.escape(e.id);
  const href = e.getAttribute('href');
  if (href) return `${e.localName}[href="${CSS.escape(href)}"]`;
  return null;
}
