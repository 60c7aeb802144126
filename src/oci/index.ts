export * from './errors.ts';
export * from './digest.ts';
export * from './grammar.ts';
export * from './media-types.ts';
export * from './manifest-check.ts';
