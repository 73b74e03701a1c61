import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/**
 * Pictures of a model's reports, drawn on the server as SVG by Vega-Lite compiled with `vega` (no browser script, no
 * hand-drawn paths). Each report maps to panels through one function of the report's own shape (`shadowPanels`,
 * `monitoringPanels`); a panel carries its spec, its numbers in words and its numbers as a table.
 */
export interface Panel {
  id: string;
  title: string;
  /** says in words what the picture shows: the image's alt text, for people who cannot see it */
  summary: string;
  spec: TopLevelSpec;
  /** the numbers drawn, shown as a table beside the picture */
  rows: Array<Record<string, string | number>>;
}

export const VEGA_LITE_SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';

/** A share as people read it; null (nothing to divide) in words. */
export const pct = (v: number | null, none = 'no pairs yet') => (v === null ? none : `${(v * 100).toFixed(1)} %`);

/** A number for a table or a sentence: at most four decimals, no float noise. */
export const num = (v: number | null | undefined) =>
  v === null || v === undefined ? '–' : String(Math.round(v * 1e4) / 1e4);

/** A Vega-Lite spec → an SVG document, rendered headless (no canvas, no DOM). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const xml = (text: string) =>
  text.replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch] as string);

/**
 * A panel's picture as a file that speaks for itself: the SVG's own `<title>` and `<desc>` carry the panel's title
 * and summary (vega labels the marks, not the document), for whoever opens the file without the page.
 */
export async function panelSvg(panel: Panel): Promise<string> {
  const svg = await renderSvg(panel.spec);
  return svg.replace(
    /^<svg([^>]*)>/,
    `<svg$1 role="img" aria-labelledby="title desc"><title id="title">${xml(panel.title)}</title><desc id="desc">${xml(panel.summary)}</desc>`,
  );
}
