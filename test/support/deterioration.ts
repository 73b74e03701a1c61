/**
 * The deterioration model's two versions, for the release tests (shadow, canary, reload): instances and expected
 * scores straight from the ONNX files, independent of the gateway's code, and a scan of what the shadow recorder
 * keeps in Redis.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { KeySpace } from '../../src/platform/keyspace.ts';
import { MODELS_DIR } from './models.ts';
import { REDIS_URL, scanKeys } from './redis.ts';

export const MODEL = 'deterioration';

export interface StoredValue {
  key: string;
  type: string;
  /** every value the key holds, as Redis returns it (hash: field → value; stream: entry field → value) */
  values: Array<{ field?: string; value: string }>;
}

/**
 * Every key of the `prefix` key space (the global tag and the model shards) whose name contains "shadow", whatever
 * its type, with all it holds.
 */
export async function shadowStorage(prefix: string): Promise<StoredValue[]> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const out: StoredValue[] = [];
    const found = await Promise.all(new KeySpace(prefix).patterns().map((p) => scanKeys(redis, p)));
    for (const key of [...new Set(found.flat())].filter((k) => k.slice(k.indexOf('}')).includes('shadow')).sort()) {
      const type = await redis.type(key);
      const values: StoredValue['values'] = [];
      switch (type) {
        case 'hash':
          for (const [field, value] of Object.entries(await redis.hgetall(key))) values.push({ field, value });
          break;
        case 'list':
          for (const value of await redis.lrange(key, 0, -1)) values.push({ value });
          break;
        case 'set':
          for (const value of await redis.smembers(key)) values.push({ value });
          break;
        case 'zset':
          for (const value of await redis.zrange(key, '0', '-1')) values.push({ value });
          break;
        case 'string':
          values.push({ value: (await redis.get(key)) ?? '' });
          break;
        case 'stream':
          for (const [, fields] of await redis.xrange(key, '-', '+')) {
            for (let i = 0; i < fields.length; i += 2) {
              values.push({ field: fields[i] as string, value: fields[i + 1] as string });
            }
          }
          break;
        default:
          values.push({ value: `<unexpected type ${type}>` });
      }
      out.push({ key, type, values });
    }
    return out;
  } finally {
    redis.disconnect();
  }
}
export interface Vitals {
  age: number;
  respirationRate: number;
  spo2: number;
  systolicBP: number;
  pulse: number;
  temperature: number;
  onOxygen: boolean;
}

/** A patient near the deterioration threshold: the vitals the release tests score (canary, kill switch, silent). */
export const SICK_VITALS: Vitals = {
  age: 71,
  respirationRate: 24,
  spo2: 93,
  systolicBP: 104,
  pulse: 112,
  temperature: 38.1,
  onOxygen: false,
};

/** The feature columns in the order the manifest declares them (read from the bundled model.yaml). */
async function featureOrder(modelsDir: string): Promise<Array<keyof Vitals>> {
  const manifest = YAML.parse(await readFile(path.join(modelsDir, MODEL, 'model.yaml'), 'utf8'));
  return (manifest.features as Array<{ name: keyof Vitals }>).map((f) => f.name);
}

/** The response's rounding of a score (6 decimals), so expected values compare exactly. */
export const round6 = (v: number) => Math.round(v * 1e6) / 1e6;

/** Scores rows with a fresh onnxruntime session on `<version>/model.onnx`, independent of the gateway's code. */
export async function scoreOnnx(version: string, rows: Vitals[], modelsDir = MODELS_DIR): Promise<number[]> {
  const order = await featureOrder(modelsDir);
  const data = new Float32Array(rows.length * order.length);
  rows.forEach((row, r) => {
    order.forEach((name, c) => {
      const v = row[name];
      data[r * order.length + c] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    });
  });
  const session = await ort.InferenceSession.create(path.join(modelsDir, MODEL, version, 'model.onnx'));
  try {
    const out = await session.run({ features: new ort.Tensor('float32', data, [rows.length, order.length]) });
    const probability = out.probability as ort.Tensor;
    return Array.from(probability.data as Float32Array, round6);
  } finally {
    await session.release();
  }
}

export interface Scored {
  vitals: Vitals;
  v1: number;
  v2: number;
}

export interface Grid {
  /** both versions say escalate */
  agreePositive: Scored[];
  /** both versions say no escalation */
  agreeNegative: Scored[];
  /** v2 escalates where v1 does not */
  v2OnlyPositive: Scored[];
  /** v1 escalates where v2 does not */
  v1OnlyPositive: Scored[];
}

/**
 * Scores a grid of plausible vitals with both versions (ONNX directly) and sorts the rows by how the versions decide
 * at `threshold`, keeping only rows at least `margin` away from it (no rounding edge cases).
 */
export async function searchGrid(threshold = 0.3, margin = 1e-3): Promise<Grid> {
  const rows: Vitals[] = [];
  for (const age of [25, 45, 65, 85])
    for (const respirationRate of [10, 14, 18, 22, 26, 30])
      for (const spo2 of [88, 92, 95, 98])
        for (const systolicBP of [90, 120, 150])
          for (const pulse of [60, 85, 110, 130])
            for (const temperature of [36.4, 37.6, 38.8])
              for (const onOxygen of [false, true])
                rows.push({ age, respirationRate, spo2, systolicBP, pulse, temperature, onOxygen });
  const [v1, v2] = [await scoreOnnx('1', rows), await scoreOnnx('2', rows)];
  const grid: Grid = { agreePositive: [], agreeNegative: [], v2OnlyPositive: [], v1OnlyPositive: [] };
  rows.forEach((vitals, i) => {
    const a = v1[i] as number;
    const b = v2[i] as number;
    if (Math.abs(a - threshold) < margin || Math.abs(b - threshold) < margin) return;
    const s = { vitals, v1: a, v2: b };
    if (a >= threshold && b >= threshold) grid.agreePositive.push(s);
    else if (a < threshold && b < threshold) grid.agreeNegative.push(s);
    else if (b >= threshold) grid.v2OnlyPositive.push(s);
    else grid.v1OnlyPositive.push(s);
  });
  return grid;
}

/** A response body without its per-request id (to compare answers). */
export function withoutRequestId(body: Record<string, unknown>): Record<string, unknown> {
  const { requestId: _, ...rest } = body;
  return rest;
}
