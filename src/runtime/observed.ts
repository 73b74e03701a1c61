import type { Logger } from 'pino';
import type { Metrics } from '../platform/metrics.ts';
import type { BreakerRegistry } from './breakers.ts';
import { createRuntimeFactory } from './factory.ts';

/** The runtime factory of a real process: ONNX in-process, SageMaker and Vertex AI behind resilience, with metrics. */
export function observedRuntimeFactory(o: {
  onnxThreads: number;
  metrics: Metrics;
  logger: Logger;
  breakers: BreakerRegistry;
  caller?: 'request' | 'job';
}) {
  const { metrics, logger } = o;
  return createRuntimeFactory({
    onnxThreads: o.onnxThreads,
    caller: o.caller ?? 'request',
    breakers: o.breakers,
    onEvent: (event) => {
      metrics.remoteEvents.inc({ model: event.model, version: event.version, event: event.type });
      if (event.type === 'breaker' || event.type === 'give_up') {
        logger.warn(
          {
            model: event.model,
            version: event.version,
            endpoint: event.name,
            event: event.type,
            ...('state' in event ? { state: event.state } : {}),
          },
          'remote endpoint',
        );
      }
    },
  });
}
