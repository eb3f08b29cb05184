// ANSI SGR rendering of log lines, the same as the server's (ansi.go): one
// span.line per line, the time of Sortie's timestamp prefix in span.ts, the
// colours as spans with classes, other escapes and control characters
// dropped. Text goes in through textContent: nothing is parsed as HTML.

export class SGR {
  constructor(params) {
    this.reset();
    if (params) this.apply(params.split(';').map((p) => parseInt(p, 10) || 0));
  }

  reset() {
    this.fg = 0; this.bg = 0;
    this.bold = false; this.dim = false; this.italic = false; this.underline = false;
  }

  apply(params) {
    if (params.length === 0) { this.reset(); return; }
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      if (p === 0) this.reset();
      else if (p === 1) this.bold = true;
      else if (p === 2) this.dim = true;
      else if (p === 3) this.italic = true;
      else if (p === 4) this.underline = true;
      else if (p === 22) { this.bold = false; this.dim = false; }
      else if (p === 23) this.italic = false;
      else if (p === 24) this.underline = false;
      else if ((p >= 30 && p <= 37) || (p >= 90 && p <= 97)) this.fg = p;
      else if (p === 39) this.fg = 0;
      else if ((p >= 40 && p <= 47) || (p >= 100 && p <= 107)) this.bg = p;
      else if (p === 49) this.bg = 0;
      else if (p === 38 || p === 48) {
        if (params[i + 1] === 5) i += 2;
        else if (params[i + 1] === 2) i += 4;
      }
    }
  }

  classes() {
    const c = [];
    if (this.fg) c.push('fg' + this.fg);
    if (this.bg) c.push('bg' + this.bg);
    if (this.bold) c.push('bold');
    if (this.dim) c.push('dim');
    if (this.italic) c.push('italic');
    if (this.underline) c.push('underline');
    return c.join(' ');
  }
}

const SEP = ' | ';

function timestampLen(line) {
  if (line.length < 23 || line[4] !== '-' || line[10] !== 'T' || line[13] !== ':') return 0;
  const i = line.slice(0, 40).indexOf(SEP);
  return i < 20 ? 0 : i;
}

/** renderLine renders one line into a span.line, carrying the SGR state. */
export function renderLine(line, state) {
  const out = document.createElement('span');
  out.className = 'line';
  const n = timestampLen(line);
  if (n > 0) {
    const ts = document.createElement('span');
    ts.className = 'ts';
    ts.textContent = line.slice(11, Math.min(23, n)) + ' ';
    out.append(ts);
    line = line.slice(n + SEP.length);
  }
  let text = '';
  const flush = () => {
    if (!text) return;
    const c = state.classes();
    if (c) {
      const s = document.createElement('span');
      s.className = c;
      s.textContent = text;
      out.append(s);
    } else {
      out.append(text);
    }
    text = '';
  };
  for (let i = 0; i < line.length;) {
    const code = line.charCodeAt(i);
    if (code >= 0x20 && code !== 0x7f || code === 9) {
      // Copy the run of plain characters at once.
      let j = i + 1;
      while (j < line.length) {
        const c = line.charCodeAt(j);
        if (!(c >= 0x20 && c !== 0x7f || c === 9)) break;
        j++;
      }
      text += line.slice(i, j);
      i = j;
      continue;
    }
    if (code === 0x1b && i + 1 < line.length) {
      const kind = line[i + 1];
      if (kind === '[') {
        let j = i + 2;
        while (j < line.length && (line.charCodeAt(j) < 0x40 || line.charCodeAt(j) > 0x7e)) j++;
        if (j < line.length && line[j] === 'm') {
          flush();
          const p = line.slice(i + 2, j);
          state.apply(p === '' ? [] : p.split(';').map((x) => { const v = parseInt(x, 10); return isNaN(v) ? 0 : v; }));
        }
        i = Math.min(j + 1, line.length);
      } else if (kind === ']') {
        let j = i + 2;
        while (j < line.length && line.charCodeAt(j) !== 7 && !(line.charCodeAt(j) === 0x1b && line[j + 1] === '\\')) j++;
        if (j < line.length && line.charCodeAt(j) === 0x1b) j++;
        i = Math.min(j + 1, line.length);
      } else {
        i += 2;
      }
      continue;
    }
    i++;
  }
  flush();
  return out;
}
