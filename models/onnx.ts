/**
 * A tiny layer over `onnx-proto` for writing small ONNX graphs by hand: constants, nodes, and a deterministic
 * encoder (fixed producer, IR version 8, default-domain opset 13, no timestamps). Every output is named by the
 * caller, and a node is named after its (first) output, so the graph reads well in Netron.
 */
import onnxProto, { type onnx as Onnx } from 'onnx-proto';

const { onnx } = onnxProto;

export const IR_VERSION = 8;
export const OPSET = 13;
export const PRODUCER_NAME = 'triage-models-build';
export const PRODUCER_VERSION = '1';

export const DataType = { FLOAT: onnx.TensorProto.DataType.FLOAT, INT64: onnx.TensorProto.DataType.INT64 } as const;

/** Node attributes: this layer only needs integers and integer lists (axis, keepdims, to, axes). */
export type Attrs = Record<string, number | readonly number[]>;

/** A dimension: a number, or a symbolic name such as "N" for the batch. */
export type Dim = number | string;
export interface TensorInfo {
  name: string;
  dims: readonly Dim[];
}

export class GraphBuilder {
  readonly nodes: Onnx.INodeProto[] = [];
  readonly initializers: Onnx.ITensorProto[] = [];
  private readonly names = new Set<string>();

  /** A float32 constant; a scalar when `dims` is []. Returns its name. */
  floats(name: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    this.claim(name);
    checkSize(name, values, dims);
    this.initializers.push({ name, dataType: DataType.FLOAT, dims: [...dims], floatData: [...values] });
    return name;
  }

  /** An int64 constant (indices, axes, shapes). Returns its name. */
  int64s(name: string, values: readonly number[], dims: readonly number[] = [values.length]): string {
    this.claim(name);
    checkSize(name, values, dims);
    if (!values.every(Number.isSafeInteger)) throw new Error(`${name}: int64 constant with a non-integer value`);
    this.initializers.push({ name, dataType: DataType.INT64, dims: [...dims], int64Data: [...values] });
    return name;
  }

  /** Adds `output = opType(...inputs)` and returns `output`. */
  op(opType: string, inputs: readonly string[], output: string, attrs: Attrs = {}): string {
    return this.opMulti(opType, inputs, [output], attrs)[0] as string;
  }

  /**
   * A node with several outputs (TopK: values and indices), named by the caller; the node takes the first output's
   * name. Returns the output names.
   */
  opMulti(opType: string, inputs: readonly string[], outputs: readonly string[], attrs: Attrs = {}): string[] {
    const [first] = outputs;
    if (first === undefined) throw new Error(`${opType}: a node needs at least one output`);
    for (const o of outputs) this.claim(o);
    const attribute = Object.entries(attrs).map(([name, value]) => {
      const ints = typeof value === 'number' ? [value] : value;
      if (!ints.every(Number.isSafeInteger)) throw new Error(`${first}: attribute ${name} must be integer(s)`);
      return typeof value === 'number'
        ? { name, type: onnx.AttributeProto.AttributeType.INT, i: value }
        : { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...value] };
    });
    this.nodes.push({ opType, input: [...inputs], output: [...outputs], name: first, attribute });
    return [...outputs];
  }

  private claim(name: string): void {
    if (this.names.has(name)) throw new Error(`duplicate tensor name ${name}`);
    this.names.add(name);
  }
}

function checkSize(name: string, values: readonly number[], dims: readonly number[]): void {
  const size = dims.reduce((a, b) => a * b, 1);
  if (size !== values.length) throw new Error(`${name}: ${values.length} values for dims [${dims.join(', ')}]`);
}

function valueInfo({ name, dims }: TensorInfo): Onnx.IValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim } } } };
}

export interface ModelSpec {
  /** graph name, e.g. "news2" */
  name: string;
  docString: string;
  graph: GraphBuilder;
  /** float32 inputs and outputs */
  inputs: readonly TensorInfo[];
  outputs: readonly TensorInfo[];
  /** written as metadata_props, in the order given */
  metadata?: Readonly<Record<string, string>>;
}

/** Encodes the model. The same spec gives the same bytes. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: PRODUCER_NAME,
    producerVersion: PRODUCER_VERSION,
    docString: spec.docString,
    graph: {
      name: spec.name,
      node: spec.graph.nodes,
      initializer: spec.graph.initializers,
      input: spec.inputs.map(valueInfo),
      output: spec.outputs.map(valueInfo),
    },
    metadataProps: Object.entries(spec.metadata ?? {}).map(([key, value]) => ({ key, value })),
  });
  const err = onnx.ModelProto.verify(model);
  if (err) throw new Error(`invalid ModelProto: ${err}`);
  return onnx.ModelProto.encode(model).finish();
}
