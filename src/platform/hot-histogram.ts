import type { MetricValueWithName, Registry } from 'prom-client';

export interface HotHistogramChild {
  observe(value: number): void;
}

/** One label set's figures: cumulative counts are computed at scrape time, so an observation is one increment. */
interface Series extends HotHistogramChild {
  labels: Record<string, string>;
  /** per bucket (the last is +Inf), observations that fell in it (not cumulative) */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A Prometheus histogram for the one observation every request makes (the HTTP request duration). prom-client's
 * Histogram validates and hashes the label object on every observation, even through a labelled child; this one
 * resolves a label set to its series once and then only finds the bucket and adds. It registers in a prom-client
 * Registry and exposes the same text as prom-client's Histogram (buckets, `_sum`, `_count`), so scrapes, promtool
 * and dashboards see no difference. Label values must be bounded, as everywhere here.
 */
export class HotHistogram<L extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly #labelNames: readonly L[];
  readonly #bounds: readonly number[];
  readonly #series = new Map<string, Series>();

  constructor(o: {
    name: string;
    help: string;
    labelNames: readonly L[];
    buckets: readonly number[];
    registers: Registry[];
  }) {
    this.name = o.name;
    this.help = o.help;
    this.#labelNames = o.labelNames;
    this.#bounds = [...o.buckets].sort((a, b) => a - b);
    // prom-client's Registry takes any metric with a name and get(); the type is its class's
    for (const registry of o.registers)
      registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series of a label set (created at first use; at most 10,000 kept, as a guard against an unbounded label). */
  labels(labels: Record<L, string>): HotHistogramChild {
    let key = '';
    for (const name of this.#labelNames) key += `${labels[name]}\u0000`;
    let series = this.#series.get(key);
    if (!series) {
      series = this.#newSeries(labels);
      if (this.#series.size < 10_000) this.#series.set(key, series);
    }
    return series;
  }

  #newSeries(labels: Record<L, string>): Series {
    const own: Record<string, string> = {};
    for (const name of this.#labelNames) own[name] = labels[name];
    const bounds = this.#bounds;
    const series: Series = {
      labels: own,
      counts: new Float64Array(bounds.length + 1),
      sum: 0,
      count: 0,
      observe(value: number) {
        if (!Number.isFinite(value)) return;
        let i = 0;
        while (i < bounds.length && value > (bounds[i] as number)) i++;
        series.counts[i] = (series.counts[i] as number) + 1;
        series.sum += value;
        series.count++;
      },
    };
    return series;
  }

  observe(labels: Record<L, string>, value: number): void {
    this.labels(labels).observe(value);
  }

  async get(): Promise<{
    name: string;
    help: string;
    type: 'histogram';
    values: MetricValueWithName<string>[];
    aggregator: 'sum';
  }> {
    const values: MetricValueWithName<string>[] = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.#bounds.length; i++) {
        cumulative += s.counts[i] as number;
        const le = i < this.#bounds.length ? (this.#bounds[i] as number) : '+Inf';
        values.push({ labels: { le, ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.#series.clear();
  }
}
