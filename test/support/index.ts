/** Everything tests share: the one gateway builder and one copy of each helper. */
export * from './batch.ts';
export * from './data.ts';
export * from './deterioration.ts';
export * from './gateway.ts';
export * from './http.ts';
export * from './keys.ts';
export * from './logs.ts';
export * from './models.ts';
export * from './receiver.ts';
export * from './redis.ts';
export * from './relay.ts';
export * from './runtimes.ts';
export * from './wait.ts';
