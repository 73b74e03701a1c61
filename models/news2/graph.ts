/**
 * The NEWS2 graph: the whole score (RCP 2017, Chart 1) computed inside ONNX from a machine-readable copy of the chart
 * (news2-chart.json). No scoring in TypeScript: this file only turns the chart's bands into constant tables.
 *
 * Input `features` [N, 8], columns in the manifest's order. Outputs (float32):
 *   total     [N]     aggregate score 0-20
 *   subscores [N, 7]  respirationRate, spo2, airOrOxygen, systolicBP, pulse, consciousness, temperature
 *   band      [N]     index into the manifest's clinicalRisk labels (low, low-medium, medium, high)
 *
 * A banded parameter is looked up by counting the band upper bounds the value exceeds (Greater -> Cast -> ReduceSum)
 * and gathering the band's score from a table. Values are first rounded to the chart's precision, half up:
 * integers to 1, temperature to 0.1 degC as whole tenths, floor(t * 10 + 0.5), compared with integer tenths, so
 * 35.04 -> 350 (35.0) and 36.06 -> 361 (36.1). Not ONNX `Round`: it rounds half to even (36.05 -> 36.0 but
 * 36.15 -> 36.2). The input is float32, so 36.05 arrives as 36.0499992...; t * 10 in float32 is exactly 360.5 and
 * rounds up to 36.1. A value like that sits on a rounding edge in float32 whatever the rule.
 */
import { DataType, encodeModel, GraphBuilder } from '../onnx.ts';

export interface ChartBand {
  min: number | null;
  max: number | null;
  score: number;
  /** Scale 2 only: the band applies on air (false), on oxygen (true) or both ("any") */
  onOxygen?: boolean | 'any';
}
interface BandedParameter {
  bands: ChartBand[];
}
export interface News2Chart {
  parameters: {
    respirationRate: BandedParameter;
    spo2Scale1: BandedParameter;
    spo2Scale2: BandedParameter;
    airOrOxygen: { values: { air: number; oxygen: number } };
    systolicBP: BandedParameter;
    pulse: BandedParameter;
    consciousness: { values: Record<string, number> };
    temperature: BandedParameter;
  };
  clinicalRisk: { rules_in_precedence_order: { if: string; risk: string }[] };
}

/** What the graph needs from the manifest. */
export interface News2Io {
  /** feature names, in column order */
  features: string[];
  /** values of the `consciousness` enum, in index order (alert, confusion, voice, pain, unresponsive) */
  consciousnessValues: string[];
  /** names of the `subscores` vector, in order */
  subscoreNames: string[];
  /** labels of the `band` output, in index order */
  bandLabels: string[];
}

export const SUBSCORES = [
  'respirationRate',
  'spo2',
  'airOrOxygen',
  'systolicBP',
  'pulse',
  'consciousness',
  'temperature',
] as const;

/** A lookup table: score[i] applies to values v with uppers[i-1] < v <= uppers[i] (in chart units x scale). */
interface BandTable {
  uppers: number[];
  scores: number[];
}

/**
 * Builds the table from bands, checking they tile the line: the first is open below, the last open above, and each
 * starts one chart step (1 / scale) after the previous one ends.
 */
export function bandTable(name: string, bands: readonly ChartBand[], scale = 1): BandTable {
  const at = (v: number) => Math.round(v * scale);
  const sorted = [...bands].sort((a, b) => (a.min === null ? -Infinity : a.min) - (b.min === null ? -Infinity : b.min));
  const uppers: number[] = [];
  sorted.forEach((band, i) => {
    const next = sorted[i + 1];
    if (i === 0 && band.min !== null) throw new Error(`${name}: the first band must be open below`);
    if (!next) {
      if (band.max !== null) throw new Error(`${name}: the last band must be open above`);
      return;
    }
    if (band.max === null || next.min === null || at(next.min) !== at(band.max) + 1) {
      throw new Error(`${name}: bands ${JSON.stringify(band)} and ${JSON.stringify(next)} do not meet`);
    }
    uppers.push(at(band.max));
  });
  return { uppers, scores: sorted.map((b) => b.score) };
}

/** The risk rules, checked against the wording of the chart so that a changed chart fails the build. */
function riskRules(chart: News2Chart) {
  const rules = chart.clinicalRisk.rules_in_precedence_order;
  const match = (i: number, risk: string, re: RegExp) => {
    const rule = rules[i];
    const m = rule?.if.match(re);
    if (!rule || rule.risk !== risk || !m) throw new Error(`news2 chart: unexpected clinicalRisk rule ${i}`);
    return m.slice(1).map(Number);
  };
  const [highAt] = match(0, 'high', /^aggregate >= (\d+)$/);
  const [mediumFrom, mediumTo] = match(1, 'medium', /^aggregate (\d+)-(\d+)$/);
  const [singleRed] = match(2, 'low-medium', /^any single parameter scores (\d+)/);
  match(3, 'low', /^aggregate 1-(\d+)$/);
  match(4, 'low', /^aggregate 0$/);
  if (highAt === undefined || mediumFrom === undefined || singleRed === undefined || mediumTo !== highAt - 1) {
    throw new Error('news2 chart: clinicalRisk bands do not meet');
  }
  return { highAt, mediumFrom, singleRed };
}

export function buildNews2Model(chart: News2Chart, io: News2Io): Uint8Array {
  const p = chart.parameters;
  if (io.subscoreNames.join() !== SUBSCORES.join()) throw new Error(`news2: subscores must be ${SUBSCORES.join()}`);
  const bandIndex = (label: string) => {
    const i = io.bandLabels.indexOf(label);
    if (i < 0) throw new Error(`news2: band label "${label}" missing from the manifest`);
    return i;
  };

  const g = new GraphBuilder();
  const half = g.floats('half', [0.5], []);

  const column = (name: string): string => {
    const i = io.features.indexOf(name);
    if (i < 0) throw new Error(`news2: feature ${name} missing from the manifest`);
    return g.op('Gather', ['features', g.int64s(`${name}_col`, [i])], name, { axis: 1 }); // [N, 1]
  };
  /** floor(x * scale + 0.5): the value in whole chart steps, rounded half up */
  const rounded = (x: string, scale = 1): string => {
    const scaled = scale === 1 ? x : g.op('Mul', [x, g.floats(`${x}_scale`, [scale], [])], `${x}_scaled`);
    return g.op('Floor', [g.op('Add', [scaled, half], `${x}_plus_half`)], `${x}_rounded`);
  };
  /** the score of the band holding x ([N, 1] -> [N, 1]) */
  const lookup = (prefix: string, x: string, table: BandTable): string => {
    const above = g.op('Greater', [x, g.floats(`${prefix}_uppers`, table.uppers)], `${prefix}_above`); // [N, K-1]
    const count = g.op('Cast', [above], `${prefix}_above_i64`, { to: DataType.INT64 });
    const band = g.op('ReduceSum', [count, g.int64s(`${prefix}_axes`, [1])], `${prefix}_band`, { keepdims: 1 });
    return g.op('Gather', [g.floats(`${prefix}_scores`, table.scores), band], `${prefix}_score`, { axis: 0 });
  };
  const flag = (x: string) => g.op('Greater', [x, half], `${x}_flag`); // booleans arrive as 0/1

  // respiration rate, systolic BP, pulse, temperature: one table each
  const rr = lookup('respirationRate', rounded(column('respirationRate')), bandTable('rr', p.respirationRate.bands));
  const bp = lookup('systolicBP', rounded(column('systolicBP')), bandTable('bp', p.systolicBP.bands));
  const pulse = lookup('pulse', rounded(column('pulse')), bandTable('pulse', p.pulse.bands));
  const temp = lookup('temperature', rounded(column('temperature'), 10), bandTable('temp', p.temperature.bands, 10));

  // air or oxygen: scored on both SpO2 scales
  const onOxygen = flag(column('onOxygen'));
  const { air, oxygen } = p.airOrOxygen.values;
  const oxygenScore = g.floats('oxygen_score', [oxygen], []);
  const o2 = g.op('Where', [onOxygen, oxygenScore, g.floats('air_score', [air], [])], 'o2_score');

  // SpO2: scale 1, or scale 2 whose bands from 93% up depend on air/oxygen; the scale is chosen per row
  const spo2 = rounded(column('spo2'));
  const scale2Bands = (oxy: boolean) =>
    p.spo2Scale2.bands.filter((b) => (b.onOxygen ?? 'any') === 'any' || b.onOxygen === oxy);
  const s1 = lookup('spo2s1', spo2, bandTable('spo2Scale1', p.spo2Scale1.bands));
  const s2air = lookup('spo2s2air', spo2, bandTable('spo2Scale2 on air', scale2Bands(false)));
  const s2oxy = lookup('spo2s2oxy', spo2, bandTable('spo2Scale2 on oxygen', scale2Bands(true)));
  const s2 = g.op('Where', [onOxygen, s2oxy, s2air], 'spo2s2_score');
  const useScale2 = g.op('Greater', [column('spo2Scale'), g.floats('one_and_half', [1.5], [])], 'use_scale2');
  const spo2Score = g.op('Where', [useScale2, s2, s1], 'spo2_score');

  // consciousness (ACVPU): the enum index picks the chart's score, matched on the initial (alert -> A)
  const acvpu = io.consciousnessValues.map((v) => {
    const score = p.consciousness.values[v.charAt(0).toUpperCase()];
    if (score === undefined) throw new Error(`news2: no chart score for consciousness "${v}"`);
    return score;
  });
  const level = g.op('Cast', [rounded(column('consciousness'))], 'consciousness_index', { to: DataType.INT64 });
  const acvpuTable = g.floats('consciousness_scores', acvpu);
  const acvpuScore = g.op('Gather', [acvpuTable, level], 'consciousness_score', { axis: 0 });

  const byName: Record<(typeof SUBSCORES)[number], string> = {
    respirationRate: rr,
    spo2: spo2Score,
    airOrOxygen: o2,
    systolicBP: bp,
    pulse,
    consciousness: acvpuScore,
    temperature: temp,
  };
  g.op(
    'Concat',
    SUBSCORES.map((s) => byName[s]),
    'subscores',
    { axis: 1 },
  ); // [N, 7]
  g.op('ReduceSum', ['subscores', g.int64s('sum_axes', [1])], 'total', { keepdims: 0 }); // [N]
  // opset 13: ReduceSum takes its axes as an input, ReduceMax still as an attribute (until opset 18)
  const worst = g.op('ReduceMax', ['subscores'], 'worst_subscore', { axes: [1], keepdims: 0 });

  // clinical risk, rules in precedence order: >= 7 high; 5-6 medium; any single 3 low-medium; else low
  const rules = riskRules(chart);
  const atLeast = (x: string, n: number, name: string) =>
    g.op('GreaterOrEqual', [x, g.floats(`${name}_at`, [n], [])], name);
  const label = (risk: string) => g.floats(`band_${risk.replace('-', '_')}`, [bandIndex(risk)], []);
  const isHigh = atLeast('total', rules.highAt, 'is_high');
  const isMedium = atLeast('total', rules.mediumFrom, 'is_medium');
  const hasRed = atLeast(worst, rules.singleRed, 'single_red');
  const redOrLow = g.op('Where', [hasRed, label('low-medium'), label('low')], 'band_if_below_medium');
  const belowHigh = g.op('Where', [isMedium, label('medium'), redOrLow], 'band_if_below_high');
  g.op('Where', [isHigh, label('high'), belowHigh], 'band');

  return encodeModel({
    name: 'news2',
    docString: 'NEWS2 (Royal College of Physicians 2017, Chart 1): aggregate score, subscores and clinical risk band.',
    graph: g,
    inputs: [{ name: 'features', dims: ['N', io.features.length] }],
    outputs: [
      { name: 'total', dims: ['N'] },
      { name: 'subscores', dims: ['N', SUBSCORES.length] },
      { name: 'band', dims: ['N'] },
    ],
    metadata: { source: 'RCP NEWS2 Chart 1 (2017)', subscores: SUBSCORES.join(','), band: io.bandLabels.join(',') },
  });
}
