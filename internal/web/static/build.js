// The build page's live log. The server rendered the end of the log (at
// most 256 KiB) and says, on pre#log, which attempt and byte offset it
// stopped at; the script follows the log's event stream from there (?from=,
// the same as Last-Event-ID, which EventSource cannot set on its first
// request), appends lines in batches, and keeps at most MAX_LINES in the
// page, dropping the oldest.
//
// Everything else the server rendered follows the build too: running
// durations count on every second, the byte count follows the stream, and
// when an attempt starts or the build ends the script reads the page again
// and swaps in its facts, comparison, attempts and raw-log link, so that
// the page reads as a reload would.
import {SGR, renderLine} from './ansi.js';
import {el, fetchPage, startTicking, stateClass, swapParts} from './common.js';
import './hosts.js';

const MAX_LINES = 20000;
const LIVE_TEXT = 'Following live: new lines appear below as the job prints them (at most 20,000 lines are kept on the page).';
const pre = document.getElementById('log');
const auto = document.getElementById('autoscroll');

function atEnd() {
  return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
}

// toEnd shows the last line: the log scrolled to its end, and the page
// scrolled (as little as it takes) so that the log's end is on the screen.
function toEnd() {
  pre.scrollTop = pre.scrollHeight;
  const last = pre.lastElementChild;
  if (!last) return;
  const r = last.getBoundingClientRect();
  if (r.bottom > window.innerHeight || r.top < 0) {
    last.scrollIntoView({block: 'nearest', inline: 'nearest'});
  }
}

const following = () => !auto || auto.checked;

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

function setState(state) {
  const s = document.getElementById('build-state');
  if (!s) return;
  s.textContent = state;
  s.className = 'badge ' + stateClass(state);
  s.setAttribute('data-state', state);
}

// refresh swaps in the server's render of what changed with the build.
let refreshing = null;
let again = false;
async function refresh() {
  if (refreshing) { again = true; return refreshing; }
  refreshing = (async () => {
    do {
      again = false;
      const doc = await fetchPage();
      if (!doc) break;
      swapParts(doc, ['build-facts', 'history-compare', 'attempts-box', 'log-raw']);
      const h = document.getElementById('log-h'), nh = doc.getElementById('log-h');
      if (h && nh && h.textContent !== nh.textContent) h.textContent = nh.textContent;
    } while (again);
    refreshing = null;
  })();
  return refreshing;
}

function setSize(bytes) {
  let s = document.getElementById('log-size');
  if (!s) return;
  const v = ` (${bytes} bytes)`;
  if (s.textContent !== v) s.textContent = v;
}

startTicking();

if (pre) {
  // Show the end of the log first.
  pre.scrollTop = pre.scrollHeight;
  const follow = pre.dataset.follow;
  if (follow) {
    const state = new SGR(pre.dataset.sgr || '');
    const live = document.getElementById('log-live');
    if (auto) {
      auto.closest('label').hidden = false;
      auto.addEventListener('change', () => { if (auto.checked) toEnd(); });
      // Scrolling up in the log to read stops following it; checking the
      // box again follows again.
      const away = () => requestAnimationFrame(() => { if (!atEnd()) auto.checked = false; });
      for (const ev of ['wheel', 'touchmove']) pre.addEventListener(ev, away, {passive: true});
      pre.addEventListener('keydown', (e) => {
        if (['ArrowUp', 'PageUp', 'Home'].includes(e.key)) away();
      });
    }
    let queue = [];
    let timer = null;

    const flush = () => {
      timer = null;
      if (!queue.length) return;
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
      if (following()) toEnd();
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
        const started = a !== pre.dataset.attempt; // the first attempt started
        pre.dataset.attempt = a;
        pre.dataset.offset = o;
        setSize(o);
        if (started) refresh();
      }
      push(e.data);
      if (document.getElementById('build-state')?.getAttribute('data-state') === 'WAITING') setState('RUNNING');
    };
    es.addEventListener('attempt', (e) => {
      pre.dataset.attempt = e.data;
      pre.dataset.offset = '0';
      setSize(0);
      push({attempt: e.data});
      refresh();
    });
    es.addEventListener('end', (e) => {
      es.close();
      if (timer) { clearTimeout(timer); }
      flush();
      setState(e.data);
      if (live) live.textContent = `The build ended: ${e.data}. The log above is complete.`;
      refresh().then(() => { if (following()) toEnd(); });
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CONNECTING && live) live.textContent = 'Connection lost: reconnecting…';
    };
    es.onopen = () => {
      if (live) live.textContent = LIVE_TEXT;
    };
  }
}
