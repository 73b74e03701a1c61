import * as ort from 'onnxruntime-node';
import type { ModelRuntime, OutputTensor } from './types.ts';

export interface OnnxOptions {
  /** intra-op threads: keep small, the event loop shares the cores with them */
  threads: number;
}

function toFloat32(tensor: ort.Tensor): Float32Array {
  const data = tensor.data;
  if (data instanceof Float32Array) return data;
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return Float32Array.from(data, Number);
  if (ArrayBuffer.isView(data)) return Float32Array.from(data as unknown as ArrayLike<number>);
  throw new Error(`unsupported output tensor type ${tensor.type}`);
}

/** In-process inference with onnxruntime-node. The model takes one float32 input `features` of shape [N, F]. */
export async function createOnnxRuntime(
  artifact: string,
  featureCount: number,
  options: OnnxOptions,
): Promise<ModelRuntime> {
  const session = await ort.InferenceSession.create(artifact, {
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  if (!session.inputNames.includes('features')) {
    await session.release();
    throw new Error(`${artifact}: the model has no input named "features" (has ${session.inputNames.join(', ')})`);
  }
  return {
    kind: 'onnx',
    async run(input, rows) {
      const result = await session.run({ features: new ort.Tensor('float32', input, [rows, featureCount]) });
      const out: Record<string, OutputTensor> = {};
      for (const [name, tensor] of Object.entries(result)) out[name] = { data: toFloat32(tensor), dims: tensor.dims };
      return out;
    },
    async close() {
      await session.release();
    },
  };
}
