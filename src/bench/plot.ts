/**
 * @module bench/plot
 * Drawing `--plot FILE.png`: panels side by side, each seconds against Services with both axes
 * logarithmic (the same Services range in every panel), series as lines with markers or as
 * labelled reference points, a legend under each panel and a caption under all. Drawn as SVG and
 * converted with `rsvg-convert` (Debian `librsvg2-bin`, installed on demand); without it only the
 * SVG is written. What goes in the chart is `curve.ts`'s business.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export interface PlotPoint {
  readonly services: number;
  readonly seconds: number;
  /** The value is a lower bound (the load timed out). */
  readonly atLeast?: boolean;
  /** Shown beside the point instead of its value. */
  readonly label?: string;
}

export interface PlotSeries {
  readonly label: string;
  readonly color: string;
  readonly dashed?: boolean;
  /** false: markers only (reference points from elsewhere, not a curve). */
  readonly lines?: boolean;
  readonly marker: 'circle' | 'square' | 'triangle' | 'diamond';
  readonly points: readonly PlotPoint[];
}

export interface PlotPanel {
  readonly title: string;
  /** The y axis' label. */
  readonly yLabel: string;
  readonly series: readonly PlotSeries[];
}

export interface PlotSpec {
  readonly title: string;
  readonly subtitle: string;
  readonly panels: readonly PlotPanel[];
  /** Lines under the panels. */
  readonly caption: readonly string[];
}

/** One panel's plot area and margins around it. */
const PW = 560;
const PH = 420;
const M = { left: 84, right: 24, top: 96, bottom: 56 };
const LEGEND_ROW = 20;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function logTicks(lo: number, hi: number): { major: number[]; minor: number[] } {
  const major: number[] = [];
  const minor: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v < lo * 0.999 || v > hi * 1.001) continue;
      (m === 1 ? major : minor).push(v);
    }
  }
  return { major, minor };
}

function fmtServices(v: number): string {
  return v >= 1000 ? `${v / 1000}k` : String(v);
}

function fmtSeconds(v: number): string {
  if (v >= 1) return `${Number(v.toPrecision(3))} s`;
  return `${Number((v * 1000).toPrecision(3))} ms`;
}

function marker(kind: PlotSeries['marker'], x: number, y: number, color: string, hollow: boolean): string {
  const fill = hollow ? 'white' : color;
  const s = `fill="${fill}" stroke="${color}" stroke-width="2"`;
  switch (kind) {
    case 'circle':
      return `<circle cx="${x}" cy="${y}" r="5" ${s}/>`;
    case 'square':
      return `<rect x="${x - 5}" y="${y - 5}" width="10" height="10" ${s}/>`;
    case 'triangle':
      return `<path d="M${x},${y - 6} L${x + 6},${y + 5} L${x - 6},${y + 5} Z" ${s}/>`;
    case 'diamond':
      return `<path d="M${x},${y - 7} L${x + 7},${y} L${x},${y + 7} L${x - 7},${y} Z" ${s}/>`;
  }
}

interface Box {
  readonly x: number;
  readonly y: number;
  readonly w: number;
  readonly h: number;
}

/** One panel with its plot area at (left, top); x is the shared Services range. */
function panelSvg(panel: PlotPanel, left: number, top: number, xLo: number, xHi: number): string[] {
  const ys = panel.series.flatMap((s) => s.points.map((p) => p.seconds)).filter((v) => v > 0);
  const yLo = Math.min(...ys) / 2;
  const yHi = Math.max(...ys) * 2.5;
  const X = (v: number) => left + ((Math.log10(v) - Math.log10(xLo)) / (Math.log10(xHi) - Math.log10(xLo))) * PW;
  const Y = (v: number) => top + PH - ((Math.log10(v) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))) * PH;
  const o: string[] = [];
  o.push(
    `<text x="${left + PW / 2}" y="${top - 12}" text-anchor="middle" font-size="16" font-weight="bold">${esc(panel.title)}</text>`,
  );
  // Grid and ticks.
  const xt = logTicks(xLo, xHi);
  const yt = logTicks(yLo, yHi);
  for (const v of xt.minor) o.push(`<line x1="${X(v)}" y1="${top}" x2="${X(v)}" y2="${top + PH}" stroke="#eee"/>`);
  for (const v of yt.minor) o.push(`<line x1="${left}" y1="${Y(v)}" x2="${left + PW}" y2="${Y(v)}" stroke="#eee"/>`);
  for (const v of xt.major) o.push(`<line x1="${X(v)}" y1="${top}" x2="${X(v)}" y2="${top + PH}" stroke="#ccc"/>`);
  for (const v of yt.major) o.push(`<line x1="${left}" y1="${Y(v)}" x2="${left + PW}" y2="${Y(v)}" stroke="#ccc"/>`);
  for (const v of [...xt.major, ...xt.minor]) {
    o.push(
      `<text x="${X(v)}" y="${top + PH + 20}" text-anchor="middle" font-size="13" fill="${xt.major.includes(v) ? '#000' : '#666'}">${fmtServices(v)}</text>`,
    );
  }
  for (const v of [...yt.major, ...(yt.major.length < 4 ? yt.minor : [])]) {
    o.push(
      `<text x="${left - 8}" y="${Y(v) + 4}" text-anchor="end" font-size="13" fill="${yt.major.includes(v) ? '#000' : '#666'}">${fmtSeconds(v)}</text>`,
    );
  }
  o.push(`<rect x="${left}" y="${top}" width="${PW}" height="${PH}" fill="none" stroke="#333"/>`);
  o.push(
    `<text x="${left + PW / 2}" y="${top + PH + 44}" text-anchor="middle" font-size="15">Services in the cluster (log scale)</text>`,
  );
  o.push(
    `<text transform="translate(${left - 62} ${top + PH / 2}) rotate(-90)" text-anchor="middle" font-size="15">${esc(panel.yLabel)}</text>`,
  );

  // Series; point labels placed greedily where they overlap no other label or marker.
  const taken: Box[] = [];
  for (const s of panel.series)
    for (const p of s.points) taken.push({ x: X(p.services) - 7, y: Y(p.seconds) - 7, w: 14, h: 14 });
  const overlaps = (b: Box) =>
    b.x < left ||
    b.x + b.w > left + PW ||
    taken.some((t) => b.x < t.x + t.w && t.x < b.x + b.w && b.y < t.y + t.h && t.y < b.y + b.h);
  const place = (x: number, y: number, text: string): { x: number; y: number; anchor: string } => {
    const w = text.length * 6.6 + 2;
    const candidates = [
      { dx: 9, dy: -8, anchor: 'start' },
      { dx: 9, dy: 16, anchor: 'start' },
      { dx: -9, dy: -8, anchor: 'end' },
      { dx: -9, dy: 16, anchor: 'end' },
      { dx: 9, dy: -24, anchor: 'start' },
      { dx: 9, dy: 32, anchor: 'start' },
      { dx: -9, dy: -24, anchor: 'end' },
      { dx: -9, dy: 32, anchor: 'end' },
    ];
    for (const c of candidates) {
      const box = { x: c.anchor === 'start' ? x + c.dx : x + c.dx - w, y: y + c.dy - 12, w, h: 15 };
      if (!overlaps(box)) {
        taken.push(box);
        return { x: x + c.dx, y: y + c.dy, anchor: c.anchor };
      }
    }
    return { x: x - 9, y: y - 8, anchor: 'end' };
  };
  for (const s of panel.series) {
    const pts = [...s.points].sort((a, b) => a.services - b.services);
    if (pts.length > 1 && s.lines !== false) {
      const d = pts
        .map((p, i) => `${i === 0 ? 'M' : 'L'}${X(p.services).toFixed(1)},${Y(p.seconds).toFixed(1)}`)
        .join(' ');
      o.push(
        `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="7 5"' : ''}/>`,
      );
    }
    for (const p of pts) {
      const x = X(p.services);
      const y = Y(p.seconds);
      o.push(marker(s.marker, x, y, s.color, p.atLeast === true));
      const text = p.label ?? `${p.atLeast ? '≥ ' : ''}${fmtSeconds(p.seconds)}${p.atLeast ? ' (timeout)' : ''}`;
      const at = place(x, y, text);
      o.push(
        `<text x="${at.x}" y="${at.y}" text-anchor="${at.anchor}" font-size="12" fill="${s.color}" stroke="white" stroke-width="3" paint-order="stroke">${esc(text)}</text>`,
      );
    }
  }

  // Legend, under the axis label.
  let ly = top + PH + 66;
  for (const s of panel.series) {
    const lx = left - 40;
    if (s.lines !== false)
      o.push(
        `<line x1="${lx}" y1="${ly + 6}" x2="${lx + 34}" y2="${ly + 6}" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="7 5"' : ''}/>`,
      );
    o.push(marker(s.marker, lx + 17, ly + 6, s.color, false));
    o.push(`<text x="${lx + 44}" y="${ly + 11}" font-size="13">${esc(s.label)}</text>`);
    ly += LEGEND_ROW;
  }
  return o;
}

export function plotSvg(spec: PlotSpec): string {
  const xs = spec.panels.flatMap((p) => p.series.flatMap((s) => s.points.map((pt) => pt.services)));
  const xLo = Math.min(...xs) / 1.6;
  const xHi = Math.max(...xs) * 1.6;
  const legendRows = Math.max(...spec.panels.map((p) => p.series.length));
  const panelW = M.left + PW + M.right;
  // Wide enough for the caption's lines (13 px text) even with one panel.
  const W = Math.max(spec.panels.length * panelW + 20, Math.max(0, ...spec.caption.map((l) => l.length)) * 7.2 + 40);
  const captionTop = M.top + PH + 66 + legendRows * LEGEND_ROW + 20;
  const H = captionTop + spec.caption.length * 18 + 10;
  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif">`,
  );
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${W / 2}" y="28" text-anchor="middle" font-size="20" font-weight="bold">${esc(spec.title)}</text>`);
  o.push(`<text x="${W / 2}" y="50" text-anchor="middle" font-size="13" fill="#444">${esc(spec.subtitle)}</text>`);
  spec.panels.forEach((panel, i) => {
    o.push(...panelSvg(panel, 10 + i * panelW + M.left, M.top, xLo, xHi));
  });
  spec.caption.forEach((line, i) => {
    o.push(`<text x="20" y="${captionTop + i * 18}" font-size="13" fill="#333">${esc(line)}</text>`);
  });
  o.push('</svg>');
  return o.join('\n');
}

function hasRsvg(): boolean {
  return spawnSync('rsvg-convert', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Makes sure `rsvg-convert` exists, installing Debian's librsvg2-bin if it does not. */
export function ensureRsvg(log: (m: string) => void): boolean {
  if (hasRsvg()) return true;
  log('rsvg-convert not found: apt-get install -y librsvg2-bin');
  try {
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'librsvg2-bin'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } catch (err) {
    log(`could not install librsvg2-bin: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  return hasRsvg();
}

/** Writes PNG (and the SVG beside it). Returns the files written. */
export function writePlot(pngPath: string, spec: PlotSpec, log: (m: string) => void): string[] {
  const svg = plotSvg(spec);
  const svgPath = `${pngPath.replace(/\.png$/i, '')}.svg`;
  writeFileSync(svgPath, svg);
  if (!ensureRsvg(log)) {
    log(`no rsvg-convert: wrote only ${svgPath}`);
    return [svgPath];
  }
  execFileSync('rsvg-convert', ['-f', 'png', '-o', pngPath, svgPath]);
  return [pngPath, svgPath];
}
