export * from './blob-store.ts';
export * from './errors.ts';
export * from './fs-blob-store.ts';
export * from './content-check.ts';
export * from './paths.ts';
export * from './owner.ts';
export * from './uploads.ts';
export * from './send-file.ts';
