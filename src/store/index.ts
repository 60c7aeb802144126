export * from './fs-blob-store.ts';
export * from './paths.ts';
