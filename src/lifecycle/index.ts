export * from './reconcile.ts';
export * from './verify-local.ts';
