import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mulberry32 } from '../../models/prng.ts';
import type { Feature } from '../../src/registry/schema.ts';

/** Writes `rows` NDJSON rows of in-range feature values (`{"id", <feature>: …}`), in big writes. */
export async function writeRows(file: string, features: readonly Feature[], rows: number, seed = 42): Promise<void> {
  const random = mulberry32(seed);
  const out = createWriteStream(file);
  let buffer = '';
  for (let i = 0; i < rows; i++) {
    const row: Record<string, unknown> = { id: `row-${i}` };
    for (const f of features) {
      if (!f.required && f.default !== undefined && random() < 0.5) continue;
      switch (f.type) {
        case 'integer':
          row[f.name] = f.min + Math.floor(random() * (f.max - f.min + 1));
          break;
        case 'number':
          row[f.name] = Math.round((f.min + random() * (f.max - f.min)) * 10) / 10;
          break;
        case 'boolean':
          row[f.name] = random() < 0.2;
          break;
        case 'enum':
          row[f.name] = random() < 0.8 ? f.values[0] : f.values[Math.floor(random() * f.values.length)];
          break;
      }
    }
    buffer += `${JSON.stringify(row)}\n`;
    if (buffer.length > 1 << 20) {
      if (!out.write(buffer)) await once(out, 'drain');
      buffer = '';
    }
  }
  out.end(buffer);
  await once(out, 'finish');
}
