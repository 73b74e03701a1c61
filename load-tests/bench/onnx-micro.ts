import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../../src/registry/load.ts';
import { encodeInstances } from '../../src/serving/features.ts';

export interface SessionRunStats {
  model: string;
  version: string;
  batch: number;
  runs: number;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  /** mean per row: what dynamic batching buys */
  meanUsPerRow: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * p) - 1))] as number;
}

/**
 * Raw `session.run` cost in this process, same session options as src/runtime/onnx.ts (1 intra-op thread,
 * sequential, all graph optimisations): the floor under any gateway latency. Tensors are built outside the timing.
 */
export async function measureSessionRun(options: {
  modelsDir: string;
  model: string;
  instance: Record<string, unknown>;
  batches: number[];
  runs: number;
  warmupRuns: number;
}): Promise<SessionRunStats[]> {
  const loaded = await loadModel(path.join(options.modelsDir, options.model), options.modelsDir, 60_000);
  const artifact = loaded.artifacts.get(loaded.manifest.routing.primary);
  if (!artifact) throw new Error(`${options.model}: no artifact for version ${loaded.manifest.routing.primary}`);
  const width = loaded.manifest.features.length;
  const session = await ort.InferenceSession.create(artifact, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  try {
    const stats: SessionRunStats[] = [];
    for (const batch of options.batches) {
      const input = encodeInstances(
        loaded.manifest.features,
        Array.from({ length: batch }, () => options.instance),
      );
      const feeds = { features: new ort.Tensor('float32', input, [batch, width]) };
      for (let i = 0; i < options.warmupRuns; i++) await session.run(feeds);
      const samples = new Array<number>(options.runs);
      for (let i = 0; i < options.runs; i++) {
        const t = performance.now();
        await session.run(feeds);
        samples[i] = (performance.now() - t) * 1000;
      }
      samples.sort((a, b) => a - b);
      const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
      stats.push({
        model: options.model,
        version: loaded.manifest.routing.primary,
        batch,
        runs: options.runs,
        meanUs: mean,
        p50Us: percentile(samples, 0.5),
        p99Us: percentile(samples, 0.99),
        meanUsPerRow: mean / batch,
      });
    }
    return stats;
  } finally {
    await session.release();
  }
}
