// Hand-written SVG for the switch timelines (no dependency): successes per bucket above the axis, failures
// below it on their own scale, a dashed line at the switch's anchor (t = 0).

const esc = (s) => String(s).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;');
const fmtS = (ms) => `${(ms / 1000).toFixed(1)} s`;

/** A "nice" axis top for a maximum (1, 2, 5 × 10^n). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 2, 5, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}

/**
 * tl: { anchor, bucketMs, startMs (first bucket's start relative to the anchor), acOk, acFail, pollOk, pollFail }.
 */
export function timelineSvg(tl, title) {
  const W = 860;
  const H = 340;
  const left = 64;
  const right = 16;
  const top = 54;
  const okH = 150;
  const failH = 70;
  const axisY = top + okH;
  const n = tl.acOk.length;
  const plotW = W - left - right;
  const bw = plotW / Math.max(1, n);
  const ok = tl.acOk.map((v, i) => v + (tl.pollOk[i] ?? 0));
  const fail = tl.acFail.map((v, i) => v + (tl.pollFail[i] ?? 0));
  const okTop = niceMax(Math.max(0, ...ok));
  const failTop = niceMax(Math.max(0, ...fail));
  const t0 = tl.startMs;
  const t1 = tl.startMs + n * tl.bucketMs;
  const x = (ms) => left + ((ms - t0) / (t1 - t0)) * plotW;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  out.push(
    `<text x="${left}" y="38" fill="#444">${esc(`per ${tl.bucketMs} ms: successes (green, keep-alive clients + fresh-connection poller) and failures (red, own scale); t = 0: ${tl.anchor.replaceAll('`', '')}`)}</text>`,
  );
  // Grid and y labels.
  for (const f of [0.5, 1]) {
    const y = axisY - f * okH;
    out.push(`<line x1="${left}" y1="${y.toFixed(1)}" x2="${W - right}" y2="${y.toFixed(1)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" fill="#2a7a2a">${Math.round(f * okTop)}</text>`);
  }
  out.push(`<text x="${left - 6}" y="${(axisY + failH + 4).toFixed(1)}" text-anchor="end" fill="#b22">${failTop}</text>`);
  out.push(`<line x1="${left}" y1="${axisY + failH}" x2="${W - right}" y2="${axisY + failH}" stroke="#f0e0e0"/>`);
  // Bars.
  for (let i = 0; i < n; i++) {
    const bx = (left + i * bw).toFixed(2);
    const w = Math.max(0.5, bw - 0.6).toFixed(2);
    if (ok[i] > 0) {
      const h = (ok[i] / okTop) * okH;
      out.push(`<rect x="${bx}" y="${(axisY - h).toFixed(2)}" width="${w}" height="${h.toFixed(2)}" fill="#3c9a3c"><title>${ok[i]} ok</title></rect>`);
    }
    if (fail[i] > 0) {
      const h = Math.max(1, (fail[i] / failTop) * failH);
      out.push(`<rect x="${bx}" y="${axisY}" width="${w}" height="${h.toFixed(2)}" fill="#d03030"><title>${fail[i]} failed</title></rect>`);
    }
  }
  // Axis, ticks every 500 ms, the anchor.
  out.push(`<line x1="${left}" y1="${axisY}" x2="${W - right}" y2="${axisY}" stroke="#333"/>`);
  const tickY = axisY + failH + 18;
  for (let ms = Math.ceil(t0 / 500) * 500; ms <= t1; ms += 500) {
    const tx = x(ms).toFixed(1);
    out.push(`<line x1="${tx}" y1="${axisY + failH}" x2="${tx}" y2="${axisY + failH + 5}" stroke="#333"/>`);
    out.push(`<text x="${tx}" y="${tickY}" text-anchor="middle">${fmtS(ms)}</text>`);
  }
  const ax = x(0).toFixed(1);
  out.push(`<line x1="${ax}" y1="${top - 6}" x2="${ax}" y2="${axisY + failH}" stroke="#1f4fbf" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${(x(0) + 4).toFixed(1)}" y="${top + 4}" fill="#1f4fbf">t = 0</text>`);
  const totalOk = ok.reduce((a, b) => a + b, 0);
  const totalFail = fail.reduce((a, b) => a + b, 0);
  const empty = ok.filter((v) => v === 0).length;
  out.push(
    `<text x="${left}" y="${H - 12}" fill="#444">${esc(`${totalOk} successes, ${totalFail} failures in ${fmtS(t1 - t0)}; ${empty} of ${n} buckets without a success`)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}
