import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRange } from '../../src/server/index.ts';

test('single byte ranges (RFC 9110 §14.1.2), end exclusive', () => {
  assert.deepEqual(parseRange('bytes=0-99', 1000), { kind: 'range', start: 0, end: 100 });
  assert.deepEqual(parseRange('bytes=500-', 1000), { kind: 'range', start: 500, end: 1000 });
  assert.deepEqual(parseRange('bytes=-100', 1000), { kind: 'range', start: 900, end: 1000 });
  assert.deepEqual(parseRange('bytes=-5000', 1000), { kind: 'range', start: 0, end: 1000 });
  assert.deepEqual(parseRange('bytes=990-5000', 1000), { kind: 'range', start: 990, end: 1000 });
});

test('unsatisfiable ranges give 416, malformed or multi ranges are ignored', () => {
  assert.deepEqual(parseRange('bytes=1000-', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 1000), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange(undefined, 1000), { kind: 'none' });
  assert.deepEqual(parseRange('bytes=0-1,5-6', 1000), { kind: 'none' });
  assert.deepEqual(parseRange('items=0-1', 1000), { kind: 'none' });
  assert.deepEqual(parseRange('bytes=9-3', 1000), { kind: 'none' });
  assert.deepEqual(parseRange('bytes=-', 1000), { kind: 'none' });
});
