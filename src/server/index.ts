export * from './app.ts';
export * from './range.ts';
