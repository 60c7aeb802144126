export * from './sqlite-meta-store.ts';
