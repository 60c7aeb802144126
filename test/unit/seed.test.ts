import { test } from 'node:test';
import assert from 'node:assert/strict';
import { platformWanted } from '../../src/cli/seed.ts';

test('seed --platform matching', () => {
  assert.equal(platformWanted('linux/amd64', []), true);
  assert.equal(platformWanted(undefined, []), true);
  assert.equal(platformWanted('linux/arm64/v8', ['linux/arm64']), true);
  assert.equal(platformWanted('linux/arm64', ['linux/arm64/v8']), false);
  assert.equal(platformWanted('unknown/unknown', ['linux/amd64']), false);
  assert.equal(platformWanted(undefined, ['linux/amd64']), false);
});
