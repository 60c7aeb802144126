export * from './challenge.ts';
export * from './errors.ts';
export * from './token-cache.ts';
export * from './client.ts';
