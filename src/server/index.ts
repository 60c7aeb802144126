export * from './app.ts';
export * from './range.ts';
export * from './admin-api.ts';
export * from './auth.ts';
export * from './client-error.ts';
export * from './ops.ts';
export * from './metrics.ts';
