// Hand-drawn SVG charts: bar charts (stacked or grouped) and the attempts
// timeline. Geometry is set through SVG attributes and colours through
// classes, as the console's CSP allows no style attributes. Every bar has a
// <title>, which browsers show on hover.

import { h, s, replace, fmtCompact, fmtDuration } from './ui.js';

/** The widest a bar gets, however few there are. */
const MAX_BAR = 36;

/** A round step and top for an axis from 0 to `max` with about `ticks` ticks. */
function niceScale(max, ticks = 4, integer = false) {
  if (!(max > 0)) return { top: integer ? ticks : 1, step: integer ? 1 : 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.round(step));
  return { top: Math.ceil(max / step) * step, step };
}

/**
 * Draws with `draw(width)` into a responsive box now and whenever its width
 * changes; returns the box.
 */
function responsive(className, draw) {
  const box = h('div', { class: className });
  let width = 0;
  const observer = new ResizeObserver((entries) => {
    if (!box.isConnected) {
      observer.disconnect(); // the page moved on
      return;
    }
    const w = Math.floor(entries[0].contentRect.width);
    if (w > 0 && w !== width) {
      width = w;
      replace(box, draw(w));
    }
  });
  observer.observe(box);
  return box;
}

/**
 * A bar chart with axes, ticks, gridlines and a legend.
 *   categories: [{label, tick}]  x positions; `tick` labels one on the axis
 *   series:     [{name, cls}]    cls colours its bars (st-failed, pal-2, ...)
 *   value(si, ci)                the height of series si at category ci
 *   stacked:    stack the series (else they stand side by side)
 *   title(ci)                    the hover text of category ci's bars
 *   format(v)                    a value as the axis and legend say it
 */
export function barChart({ categories, series, value, stacked = false, title, format = fmtCompact,
  integer = false, height = 260, label }) {
  const totals = series.map((_, si) => categories.reduce((sum, _c, ci) => sum + (value(si, ci) || 0), 0));
  let max = 0;
  categories.forEach((_, ci) => {
    const vals = series.map((_s, si) => value(si, ci) || 0);
    max = Math.max(max, stacked ? vals.reduce((a, b) => a + b, 0) : Math.max(0, ...vals));
  });
  const { top, step } = niceScale(max, 4, integer);

  const draw = (width) => {
    const m = { top: 12, right: 12, bottom: 28, left: 52 };
    const plotW = Math.max(10, width - m.left - m.right);
    const plotH = height - m.top - m.bottom;
    const band = plotW / Math.max(1, categories.length);
    const gap = Math.min(band * 0.22, 10);
    const y = (v) => m.top + plotH - (v / top) * plotH;
    const root = s('svg', {
      class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label || 'chart',
    });

    // Gridlines and y ticks.
    const axis = s('g', { class: 'axis' });
    for (let v = 0; v <= top + step / 1e6; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      axis.append(
        s('line', { class: v === 0 ? 'baseline' : 'grid', x1: m.left, x2: m.left + plotW, y1: yy, y2: yy }),
        s('text', { class: 'tick-label', x: m.left - 8, y: yy, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, format(v)),
      );
    }
    // X tick labels (those the caller marked, else as many as fit).
    const every = Math.max(1, Math.ceil(64 / band));
    categories.forEach((c, ci) => {
      const marked = categories.some((x) => x.tick) ? c.tick : ci % every === 0;
      if (!marked) return;
      const cx = m.left + band * ci + band / 2;
      axis.append(
        s('line', { class: 'tick', x1: cx, x2: cx, y1: m.top + plotH, y2: m.top + plotH + 4 }),
        s('text', { class: 'tick-label', x: cx, y: m.top + plotH + 17, 'text-anchor': 'middle' }, c.label),
      );
    });
    root.append(axis);

    // Bars: one group per category, with a column-high hover target.
    const bars = s('g', { class: 'bars' });
    categories.forEach((c, ci) => {
      const x0 = m.left + band * ci;
      const hover = title ? title(ci) : c.label;
      const col = s('g', { class: 'col' },
        s('rect', { class: 'hit', x: x0, y: m.top, width: band, height: plotH }, s('title', {}, hover)));
      let base = 0;
      const shown = series.map((_, si) => si).filter((si) => (value(si, ci) || 0) > 0);
      // Bars are at most MAX_BAR wide, centred in their band; side by
      // side, only the series with a value here take a place.
      const subW = Math.min(MAX_BAR, stacked ? band - gap : (band - gap) / Math.max(1, shown.length));
      const groupW = stacked ? subW : subW * shown.length;
      const left = x0 + (band - groupW) / 2;
      shown.forEach((si, k) => {
        const v = value(si, ci);
        const x = stacked ? left : left + subW * k;
        const yTop = y(base + v);
        const yBottom = y(base);
        const hgt = Math.max(1, yBottom - yTop);
        col.append(s('rect', {
          class: ['bar', series[si].cls], x: x.toFixed(2), y: (yBottom - hgt).toFixed(2),
          width: Math.max(1, subW - (stacked ? 0 : 1)).toFixed(2), height: hgt.toFixed(2), rx: 1.5,
          'data-series': series[si].name, 'data-value': v,
        }, s('title', {}, hover)));
        if (stacked) base += v;
      });
      bars.append(col);
    });
    root.append(bars);
    return root;
  };

  return h('figure', { class: 'chart-figure' },
    responsive('chart-box', draw),
    h('figcaption', { class: 'legend' }, series.map((sr, si) => h('span', { class: 'legend-item' },
      h('span', { class: ['swatch', sr.cls], 'aria-hidden': 'true' }), sr.name,
      h('span', { class: 'legend-total' }, format(totals[si]))))));
}

/** A tick's offset: fractions of a millisecond kept (2.5 ms, not "3 ms"). */
function tickDuration(ms) {
  return ms < 10 ? `${Number(ms.toFixed(2))} ms` : fmtDuration(ms);
}

/**
 * The attempts of a run as horizontal bars on one time axis, from the run's
 * creation to its end (or now).
 *   rows: [{label, sublabel, start, end, cls, title}]
 */
export function timeline({ rows, from, to }) {
  const span = Math.max(1, to - from);
  const rowH = 40;
  const draw = (width) => {
    const m = { top: 8, right: 16, bottom: 26, left: 168 };
    const plotW = Math.max(10, width - m.left - m.right);
    const height = m.top + rows.length * rowH + m.bottom;
    const x = (t) => m.left + ((t - from) / span) * plotW;
    const root = s('svg', { class: 'chart timeline', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'attempts timeline' });

    const { step } = niceScale(span, Math.max(2, Math.floor(plotW / 110)));
    const axis = s('g', { class: 'axis' });
    for (let t = 0; t <= span + step / 1e6; t += step) {
      const xx = Math.round(x(from + t)) + 0.5;
      axis.append(
        s('line', { class: t === 0 ? 'baseline' : 'grid', x1: xx, x2: xx, y1: m.top, y2: height - m.bottom }),
        s('text', { class: 'tick-label', x: xx, y: height - m.bottom + 16, 'text-anchor': t === 0 ? 'start' : 'middle' },
          t === 0 ? 'created' : `+${tickDuration(t)}`),
      );
    }
    root.append(axis);

    rows.forEach((r, i) => {
      const cy = m.top + i * rowH + rowH / 2;
      const x1 = x(r.start);
      const x2 = Math.max(x1 + 3, x(r.end));
      root.append(s('g', { class: 'lane' },
        s('text', { class: 'lane-label', x: 0, y: cy - 3, 'dominant-baseline': 'middle' }, r.label),
        s('text', { class: 'lane-sublabel', x: 0, y: cy + 11, 'dominant-baseline': 'middle' }, r.sublabel || ''),
        s('line', { class: 'wait', x1: m.left, x2: x1, y1: cy, y2: cy }),
        s('rect', { class: ['bar', r.cls], x: x1.toFixed(2), y: cy - 9, width: (x2 - x1).toFixed(2), height: 18, rx: 3 },
          s('title', {}, r.title))));
    });
    return root;
  };
  return responsive('chart-box', draw);
}
