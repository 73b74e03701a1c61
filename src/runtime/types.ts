/** One output tensor, as float32 whatever the model emitted. */
export interface OutputTensor {
  data: Float32Array;
  dims: readonly number[];
}

/** Per-call options. In-process runtimes may ignore them; remote runtimes must settle by `deadline`. */
export interface RunOptions {
  /** epoch ms by which the call must have settled (a remote call gets no more time than this) */
  deadline?: number;
  /** aborts the call (its result is no longer wanted) */
  signal?: AbortSignal;
}

/**
 * What every runtime (in-process ONNX, SageMaker, Vertex AI) offers the gateway: score `rows` rows of
 * features laid out row-major in `input`, return the named output tensors with the batch as their first dimension.
 */
export interface ModelRuntime {
  readonly kind: string;
  /** `deadline` (epoch ms): remote runtimes bound their timeouts and retries by it */
  run(input: Float32Array, rows: number, options?: RunOptions): Promise<Record<string, OutputTensor>>;
  close(): Promise<void>;
}
