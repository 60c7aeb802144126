export * from './sqlite-meta-store.ts';
export * from './provenance-store.ts';
