import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BREAKER_FAILURES, Breaker } from '../../src/upstream/breaker.ts';

test('the breaker opens after consecutive failures, lets one probe through after the backoff, doubles it on a failed probe, closes on success', () => {
  let now = 1_000_000;
  const changes: Array<[boolean, number]> = [];
  const b = new Breaker((down, retryAt) => changes.push([down, retryAt - now]), () => now);
  for (let i = 0; i < BREAKER_FAILURES - 1; i++) b.failure();
  assert.deepEqual(b.admit(), { ok: true });
  b.success(); // an answer in between starts the count again
  for (let i = 0; i < BREAKER_FAILURES; i++) b.failure();
  assert.equal(b.down, true);
  assert.deepEqual(changes, [[true, 5_000]]);
  assert.deepEqual(b.admit(), { ok: false, retryAt: now + 5_000, failures: 3 });
  now += 5_000;
  assert.deepEqual(b.admit(), { ok: true }, 'the probe');
  assert.equal(b.admit().ok, false, 'one probe at a time');
  b.failure();
  assert.deepEqual(changes.at(-1), [true, 10_000], 'a failed probe doubles the backoff');
  now += 10_000;
  assert.deepEqual(b.admit(), { ok: true });
  b.success();
  assert.equal(b.down, false);
  assert.deepEqual(changes.at(-1), [false, -now]);
  assert.deepEqual(b.admit(), { ok: true });
});
