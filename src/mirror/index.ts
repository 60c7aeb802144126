export * from './types.ts';
export * from './single-flight.ts';
export * from './blob-fill.ts';
export * from './mirror.ts';
export * from './provenance-recorder.ts';
export * from './provenance-query.ts';
export * from './manifest-record.ts';
export * from './push.ts';
