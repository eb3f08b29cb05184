// The build page's live log. The server rendered the end of the log (at
// most 256 KiB) and says, on pre#log, which attempt and byte offset it
// stopped at; the script follows the log's event stream from there (?from=,
// the same as Last-Event-ID, which EventSource cannot set on its first
// request), appends lines in batches, and keeps at most MAX_LINES in the
// page, dropping the oldest.
import {SGR, renderLine} from './ansi.js';
import {badge, el, fmtDuration, fmtTime, span, stateClass} from './common.js';

const MAX_LINES = 20000;
const pre = document.getElementById('log');
const auto = document.getElementById('autoscroll');

function atEnd() {
  return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
}

function toEnd() { pre.scrollTop = pre.scrollHeight; }

// trim drops the oldest lines beyond MAX_LINES.
function trim() {
  const extra = pre.childElementCount - MAX_LINES;
  if (extra <= 0) return;
  const r = document.createRange();
  r.setStartBefore(pre.firstChild);
  r.setEndBefore(pre.children[extra]);
  r.deleteContents();
  const note = document.getElementById('log-truncated');
  const text = 'Older lines were dropped from the page to keep it fast: open the raw log for the whole of it.';
  if (note) note.textContent = text;
  else pre.before(el('p', {class: 'note', id: 'log-truncated'}, text));
}

async function refreshAttempts() {
  const facts = document.getElementById('build-facts');
  const m = location.pathname.match(/^\/buildsets\/([^/]+)\/builds\/([^/]+)$/);
  if (!m || !facts) return;
  try {
    const r = await fetch(`/api/v1/buildsets/${m[1]}/builds/${m[2]}`, {headers: {Accept: 'application/json'}, cache: 'no-store'});
    if (!r.ok) return;
    const b = await r.json();
    const now = Date.now();
    const body = document.querySelector('#attempts tbody');
    if (b.attempts.length) document.getElementById('no-attempt')?.remove();
    body.replaceChildren(...b.attempts.map((a) => {
      const state = a.result || 'RUNNING';
      const d = span(a.started_at, a.finished_at, now);
      const current = String(a.number) === pre.dataset.attempt;
      return el('tr', {'data-attempt': a.number, class: current ? 'current' : null},
        el('th', {scope: 'row'}, el('a', {href: '?attempt=' + a.number, 'aria-current': current ? 'page' : null}, String(a.number))),
        el('td', {}, badge(state)), el('td', {}, fmtTime(a.started_at)), el('td', {}, fmtTime(a.finished_at)),
        el('td', {}, d === null ? '' : fmtDuration(d)), el('td', {}, a.error || ''));
    }));
  } catch (e) {
    // The table stays as it was.
  }
}

function setState(state) {
  const s = document.getElementById('build-state');
  if (!s) return;
  s.textContent = state;
  s.className = 'badge ' + stateClass(state);
  s.setAttribute('data-state', state);
}

if (pre) {
  // Show the end of the log first.
  toEnd();
  const follow = pre.dataset.follow;
  if (follow) {
    const state = new SGR(pre.dataset.sgr || '');
    const live = document.getElementById('log-live');
    if (auto) auto.closest('label').hidden = false;
    let queue = [];
    let timer = null;

    const flush = () => {
      timer = null;
      if (!queue.length) return;
      const stick = (!auto || auto.checked) && atEnd();
      let items = queue;
      queue = [];
      if (items.length > MAX_LINES) items = items.slice(items.length - MAX_LINES);
      const frag = document.createDocumentFragment();
      for (const it of items) {
        if (typeof it === 'string') {
          frag.append(renderLine(it, state));
        } else {
          state.reset();
          const marker = el('span', {class: 'line marker'}, `── attempt ${it.attempt} ──`);
          frag.append(marker);
        }
      }
      document.getElementById('log-empty')?.remove();
      pre.append(frag);
      trim();
      if (stick) toEnd();
    };
    const push = (item) => {
      queue.push(item);
      if (queue.length > 2 * MAX_LINES) queue = queue.slice(queue.length - MAX_LINES);
      if (!timer) timer = setTimeout(flush, 50);
    };

    const es = new EventSource(follow);
    es.onmessage = (e) => {
      if (e.lastEventId) {
        const [a, o] = e.lastEventId.split(':');
        if (a !== pre.dataset.attempt) refreshAttempts(); // the first attempt started
        pre.dataset.attempt = a;
        pre.dataset.offset = o;
      }
      push(e.data);
      if (document.getElementById('build-state')?.getAttribute('data-state') === 'WAITING') setState('RUNNING');
    };
    es.addEventListener('attempt', (e) => {
      pre.dataset.attempt = e.data;
      pre.dataset.offset = '0';
      push({attempt: e.data});
      refreshAttempts();
    });
    es.addEventListener('end', (e) => {
      es.close();
      flush();
      setState(e.data);
      if (live) live.textContent = `The build ended: ${e.data}. The log above is complete.`;
      refreshAttempts();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CONNECTING && live) live.textContent = 'Connection lost: reconnecting…';
    };
    es.onopen = () => {
      if (live) live.textContent = 'Following live: new lines appear below as the job prints them (at most 20,000 lines are kept on the page).';
    };
  }
}
