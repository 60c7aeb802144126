export * from './meta-store.ts';
export * from './sqlite-meta-store.ts';
export * from './caching-meta-store.ts';
