import type { Manifest } from '../registry/schema.ts';
import { fnv1a } from './documents.ts';

/** Which versions serve a model right now: the primary, a sticky canary split, and shadows. */
export interface RoutingState {
  primary: string;
  canary?: { version: string; weight: number };
  shadow?: { versions: string[]; sampleRate: number };
  /** silent deployment: the primary scores real traffic and is monitored, but no score is shown until promoted */
  silent?: boolean;
}

export function routingFromManifest(m: Manifest): RoutingState {
  const r = m.routing;
  return {
    primary: r.primary,
    ...(r.canary && r.canary.weight > 0 ? { canary: { ...r.canary } } : {}),
    ...(r.shadow ? { shadow: { versions: [...r.shadow.versions], sampleRate: r.shadow.sampleRate } } : {}),
  };
}

/**
 * The version that answers a request. With a subject key (a patient or encounter id) the split is sticky: the same
 * subject lands in the same bucket for the life of the split, so a patient does not flip between versions. Without
 * one, each request is drawn at random.
 */
export function chooseVersion(
  model: string,
  routing: RoutingState,
  subjectKey: string | undefined,
  random: () => number = Math.random,
): string {
  const canary = routing.canary;
  if (!canary || canary.weight <= 0) return routing.primary;
  const bucket =
    subjectKey !== undefined ? fnv1a(`${model}\u0000${subjectKey}`) % 10_000 : Math.floor(random() * 10_000);
  return bucket < canary.weight * 100 ? canary.version : routing.primary;
}
