/** One output tensor, as float32 whatever the model emitted. */
export interface OutputTensor {
  data: Float32Array;
  dims: readonly number[];
}

/**
 * What every runtime (in-process ONNX today; SageMaker and Vertex AI later) offers the gateway: score `rows` rows of
 * features laid out row-major in `input`, return the named output tensors with the batch as their first dimension.
 */
export interface ModelRuntime {
  readonly kind: string;
  run(input: Float32Array, rows: number): Promise<Record<string, OutputTensor>>;
  close(): Promise<void>;
}
