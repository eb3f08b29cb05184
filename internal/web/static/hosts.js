// The Ansible views of the build and buildset pages (templates/hosts.html):
// the host filter, and, while the build or buildset runs, the grid or
// matrix read again from the server every few seconds.
import {fetchPage, swapParts} from './common.js';

const PERIOD = 2000;
// filter shows the rows (and failure details) of the hosts whose name
// holds one of the words typed, and says how many.
function filter() {
  const input = document.getElementById('host-filter');
  const box = document.getElementById('hosts-box');
  if (!input || !box) return;
  const words = input.value.toLowerCase().split(/[\s,]+/).filter((w) => w);
  let shown = 0, all = 0;
  for (const e of box.querySelectorAll('[data-host]')) {
    const match = !words.length || words.some((w) => e.dataset.host.toLowerCase().includes(w));
    e.hidden = !match;
    if (e.tagName === 'TR') { all++; if (match) shown++; }
  }
  const count = document.getElementById('host-count');
  if (count) count.textContent = words.length ? `${shown} of ${all} hosts` : '';
}

// wire makes the filter work, and applies the one of the address.
function wire() {
  const input = document.getElementById('host-filter');
  if (!input) return;
  input.addEventListener('input', () => {
    filter();
    const u = new URL(location.href);
    if (input.value) u.searchParams.set('host', input.value); else u.searchParams.delete('host');
    history.replaceState(null, '', u);
  });
  filter();
}
wire();

const live = () => document.getElementById('hosts-box')?.dataset.live === 'true';

// follow reads the page again while the grid is live, and swaps in the
// new one; a page that had no grid gets one as soon as Ansible reports.
async function follow() {
  const doc = await fetchPage();
  if (doc) {
    const next = doc.getElementById('hosts');
    const cur = document.getElementById('hosts');
    if (next && !cur) {
      // Where the server renders it: after the buildset's actions, before
      // the build's log.
      const actions = document.getElementById('actions');
      const log = document.querySelector('.log-section');
      if (actions) actions.after(document.importNode(next, true));
      else if (log) log.before(document.importNode(next, true));
      wire();
    } else if (next) {
      swapParts(doc, ['hosts-box']);
      filter();
    }
    const done = doc.getElementById('hosts-box')?.dataset.live === 'false';
    if (done) return;
  }
  setTimeout(follow, PERIOD);
}

// A page whose buildset or build is still running follows it; a done
// one (data-done, the build's finished state) does not.
const facts = document.getElementById('bs-facts');
const buildState = document.getElementById('build-state');
const running = live() || (facts && facts.dataset.done === 'false') ||
  (buildState && !['SUCCESS', 'FAILURE', 'TIMED_OUT', 'ERROR', 'RETRY_LIMIT', 'SKIPPED', 'CANCELED', 'CONFIG_ERROR'].includes(buildState.dataset.state));
if (running) setTimeout(follow, PERIOD);

// openTarget opens the diff of the result a cell leads to.
function openTarget() {
  const id = decodeURIComponent(location.hash.slice(1));
  const li = id && document.getElementById(id);
  const d = li && li.querySelector && li.querySelector('details');
  if (d) d.open = true;
}
window.addEventListener('hashchange', openTarget);
openTarget();
