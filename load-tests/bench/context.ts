import type { Children } from './children.ts';
import type { LoadGenerator } from './load.ts';

export interface BenchSettings {
  /** measured seconds per target (BENCH_DURATION) */
  durationSec: number;
  /** discarded seconds before each measured run (BENCH_WARMUP) */
  warmupSec: number;
  /** concurrent connections (BENCH_CONNECTIONS) */
  connections: number;
  /** also run a Triage with access logs on at info level (default; BENCH_ACCESS_LOG=0 skips it) */
  accessLogVariant: boolean;
  /** BENCH_CPU_PROF=1: run the Triage child under --cpu-prof and print its top self-time functions */
  cpuProfile: boolean;
}

/** What every section gets: shared settings, the child registry (all children die with the bench), the load tool. */
export interface BenchContext {
  repoRoot: string;
  modelsDir: string;
  /** where results (and profiles) go: bench-results/ */
  resultsDir: string;
  redisUrl: string | undefined;
  settings: BenchSettings;
  children: Children;
  load: LoadGenerator;
  log(line?: string): void;
}

export interface SectionResult {
  /** everything the section measured; written to the JSON results under the section's name */
  data: unknown;
  /** failures that make the bench exit non-zero (a target that missed its goal is not an error) */
  errors: string[];
}

export interface Section {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<SectionResult>;
}
