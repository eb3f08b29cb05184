// The status page's live parts: every 2 seconds the script reads the page
// again from the server and swaps in the parts that changed (the
// pipelines with their buildsets and jobs, the pause notice, the
// semaphores, the nodes, the config's health), never the whole page: the server's
// render is the only one, so a live part reads exactly as a reload would.
import {fetchPage, startTicking, swapParts} from './common.js';

const PERIOD = 2000;
const main = document.getElementById('status');
const note = document.getElementById('updated');

function apply(doc) {
  // The notice of a pause of everything comes and goes.
  const all = document.getElementById('paused-all'), nextAll = doc.getElementById('paused-all');
  if (!all && nextAll) document.getElementById('pipelines').before(document.importNode(nextAll, true));
  swapParts(doc, ['ready', 'slots', 'paused-all', 'pipelines', 'semaphores', 'nodes', 'config-health']);
}

async function refresh() {
  try {
    const doc = await fetchPage(location.pathname);
    if (!doc || !doc.getElementById('status')) throw new Error('the page could not be read');
    apply(doc);
    note.textContent = 'Refreshed every 2 seconds; last at ' + new Date().toLocaleTimeString() + '.';
  } catch (e) {
    note.textContent = 'Live update failed (' + e.message + '); retrying.';
  } finally {
    setTimeout(refresh, PERIOD);
  }
}

if (main) {
  startTicking();
  setTimeout(refresh, PERIOD);
}
