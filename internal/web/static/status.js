// The status page's live parts: every 2 seconds the script reads
// /api/v1/status and rebuilds the parts that changed (a pipeline's queue,
// the semaphores, the config's health), never the whole page.
import {el, fmtTime, shortCommit, shortID, stateClass} from './common.js';

const PERIOD = 2000;
const main = document.getElementById('status');
const seen = new Map(); // part -> the JSON it was last drawn from

function changed(key, value) {
  const j = JSON.stringify(value);
  if (seen.get(key) === j) return false;
  seen.set(key, j);
  return true;
}

function pauseText(p) {
  return ` by ${p.by} since ${fmtTime(p.at)}` + (p.reason ? `: ${p.reason}` : '');
}

function entry(e) {
  let waiting = null;
  if (e.waiting) waiting = el('span', {class: 'waiting'}, e.waiting);
  else if (e.state === 'ADMITTED') waiting = el('span', {class: 'waiting'}, 'waiting for its pipeline semaphore');
  return el('li', {},
    el('a', {class: 'buildset', href: '/buildsets/' + encodeURIComponent(e.id)}, shortCommit(e.commit)), ' ',
    el('span', {class: 'badge ' + stateClass(e.state)}, e.state), ' ',
    el('span', {class: 'cause'}, e.cause), ' ',
    el('span', {class: 'since'}, 'since ' + fmtTime(e.created_at)),
    waiting ? [' ', waiting] : null);
}

function live(p) {
  const parts = [];
  if (p.paused) parts.push(el('p', {class: 'paused'}, el('strong', {}, 'Paused'), pauseText(p.paused)));
  parts.push(el('h3', {}, 'Running'));
  parts.push(p.running.length ? el('ul', {class: 'queue running'}, p.running.map(entry)) : el('p', {class: 'empty'}, 'Nothing running.'));
  parts.push(el('h3', {}, 'Waiting'));
  parts.push(p.queued.length ? el('ul', {class: 'queue queued'}, p.queued.map(entry)) : el('p', {class: 'empty'}, 'Nothing waiting.'));
  return parts;
}

function meta(p) {
  let s = `${p.manager} manager · ${p.precedence} precedence`;
  if (p.semaphore) s += ` · semaphore ${p.semaphore}`;
  if (p.push_branch) s += ` · on push to ${p.push_branch}`;
  if (p.cron) s += ` · cron ${p.cron}`;
  return el('p', {class: 'meta'}, s + ' · ', el('a', {href: '/history?pipeline=' + encodeURIComponent(p.name)}, 'history'));
}

function pipelines(list) {
  const box = document.getElementById('pipelines');
  const names = new Set(list.map((p) => p.name));
  for (const s of box.querySelectorAll('section.pipeline')) {
    if (!names.has(s.dataset.pipeline)) { s.remove(); seen.delete('p:' + s.dataset.pipeline); }
  }
  for (const p of list) {
    let s = box.querySelector(`section.pipeline[data-pipeline="${CSS.escape(p.name)}"]`);
    if (!s) {
      s = el('section', {class: 'pipeline', 'data-pipeline': p.name, 'aria-labelledby': 'pl-' + p.name},
        el('h2', {id: 'pl-' + p.name}, p.name), meta(p), el('div', {class: 'live'}));
      box.append(s);
    }
    if (changed('p:' + p.name, p)) {
      s.querySelector('.live').replaceChildren(...live(p));
    }
  }
}

function holder(h) {
  const [bs, job] = h.split('/');
  const bsLink = el('a', {href: '/buildsets/' + encodeURIComponent(bs)}, 'buildset …' + shortID(bs));
  if (!job) return [bsLink];
  return [el('a', {href: `/buildsets/${encodeURIComponent(bs)}/builds/${encodeURIComponent(job)}`}, job), ' of ', bsLink];
}

// people lists holders or waiters (the API's JSON), as the server does.
function people(list, at) {
  if (!list.length) return el('span', {class: 'none'}, 'none');
  return el('ul', {}, list.map((h) => el('li', {}, holder(h.holder), ' ', el('span', {class: 'since'}, 'since ' + fmtTime(h[at])),
    h.owner_dead ? [' ', el('span', {class: 'owner-dead'}, 'its process died: freed once its builds are ended')] : [])));
}

function semaphores(list) {
  if (!changed('semaphores', list)) return;
  const sec = document.getElementById('semaphores');
  const old = sec.querySelector(':scope > .scroll, :scope > p.empty');
  let next;
  if (!list.length) {
    next = el('p', {class: 'empty'}, 'The config defines no semaphore.');
  } else {
    next = el('div', {class: 'scroll'}, el('table', {},
      el('thead', {}, el('tr', {}, ['Semaphore', 'Max', 'Holders', 'Waiters'].map((t) => el('th', {scope: 'col'}, t)))),
      el('tbody', {}, list.map((s) => el('tr', {'data-semaphore': s.name},
        el('th', {scope: 'row'}, s.name),
        el('td', {class: 'max'}, s.max ? String(s.max) : '?'),
        el('td', {class: 'holders'}, people(s.holders, 'acquired_at')),
        el('td', {class: 'waiters'}, people(s.waiters, 'since')))))));
  }
  if (old) old.replaceWith(next); else sec.append(next);
}

function configHealth(c) {
  if (!changed('config', c)) return;
  const sec = document.getElementById('config-health');
  const h = sec.querySelector('h2');
  const parts = [h, el('p', {}, 'In force: ', el('code', {}, c.path), `, loaded ${fmtTime(c.loaded_at)}.`)];
  const re = c.reload_error;
  if (re && re.errors && re.errors.length) {
    parts.push(el('div', {class: 'reload-error error', role: 'alert'},
      el('p', {}, el('strong', {}, 'The last reload failed'), ` (${fmtTime(re.at)}); the server keeps the config above.`),
      el('ul', {}, re.errors.map((e) => el('li', {}, el('pre', {}, e))))));
    sec.classList.add('error');
  } else {
    parts.push(el('p', {class: 'ok'}, 'No reload error.'));
    sec.classList.remove('error');
  }
  sec.replaceChildren(...parts);
}

function pausedAll(p) {
  let e = document.getElementById('paused-all');
  if (!p) { if (e) e.remove(); return; }
  const next = el('p', {id: 'paused-all'}, el('strong', {}, 'Paused:'), ' every pipeline' + pauseText(p) + '. Running builds finish; nothing new starts.');
  if (e) e.replaceWith(next); else document.getElementById('pipelines').before(next);
}

function apply(st) {
  document.getElementById('ready').textContent = st.ready ? 'Server ready.' : 'Server starting or stopping: nothing new starts.';
  if (st.slots) document.getElementById('slots').textContent = `${st.slots.in_use} of ${st.slots.max} build slots in use (limits.max_parallel).`;
  if (changed('paused', st.paused)) pausedAll(st.paused);
  pipelines(st.pipelines || []);
  semaphores(st.semaphores || []);
  configHealth(st.config);
}

const note = document.getElementById('updated');

async function refresh() {
  try {
    const r = await fetch('/api/v1/status', {headers: {Accept: 'application/json'}, cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    apply(await r.json());
    note.textContent = 'Refreshed every 2 seconds; last at ' + new Date().toLocaleTimeString() + '.';
  } catch (e) {
    note.textContent = 'Live update failed (' + e.message + '); retrying.';
  } finally {
    setTimeout(refresh, PERIOD);
  }
}

if (main) setTimeout(refresh, PERIOD);
