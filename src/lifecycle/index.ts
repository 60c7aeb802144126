export * from './reconcile.ts';
export * from './verify-local.ts';
export * from './cache-plan.ts';
export * from './evictor.ts';
