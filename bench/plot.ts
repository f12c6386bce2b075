/**
 * SVG plots for the report, drawn with Vega-Lite compiled to Vega and rendered headless by Vega's
 * own SVG string renderer (no browser, no canvas).
 */
import { View, parse } from 'vega';
import { type TopLevelSpec, compile } from 'vega-lite';
import type { Row, RssSample } from './results.js';

/** Renders a Vega-Lite spec to an SVG document. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Grouped bars: seconds per step of one scenario, one bar per method and VMM. */
export function stepTimesSpec(rows: Row[], scenario: string, title: string): TopLevelSpec {
  const values = rows
    .filter((r) => r.scenario === scenario && r.metric.endsWith('_guest_s') && r.value !== null)
    .map((r) => ({
      step: r.metric.replace(/_guest_s$/, ''),
      who: `${r.vmm} ${r.method}`,
      seconds: r.value,
    }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 520,
    height: 260,
    data: { values },
    mark: 'bar',
    encoding: {
      x: { field: 'step', type: 'nominal', sort: null, title: null },
      xOffset: { field: 'who', type: 'nominal' },
      y: { field: 'seconds', type: 'quantitative', title: 'seconds until the guest shows it' },
      color: { field: 'who', type: 'nominal', title: null },
    },
  };
}

/** Lines: host resident memory over time in the speed scenario, one line per method and VMM. */
export function rssTimelineSpec(samples: RssSample[]): TopLevelSpec {
  const values = samples.map((s) => ({ ...s, who: `${s.vmm} ${s.method}` }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Host resident memory during 0 → 4 GiB → 0 (1 GiB written in between)',
    width: 520,
    height: 260,
    data: { values },
    mark: { type: 'line', interpolate: 'step-after' },
    encoding: {
      x: { field: 'seconds', type: 'quantitative', title: 'seconds' },
      y: { field: 'residentMiB', type: 'quantitative', title: 'host resident MiB' },
      color: { field: 'who', type: 'nominal', title: null },
    },
  };
}
