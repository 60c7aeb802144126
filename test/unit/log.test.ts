import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { accessLogger, createLogger } from '../../src/log/index.ts';

/** A destination that keeps every line written to it. */
function capture(): { stream: Writable & { write(s: string): boolean }; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test('the process logger censors secrets wherever they appear in fields', () => {
  const dest = capture();
  const log = createLogger('info', dest.stream);
  log.info({ headers: { authorization: 'Bearer s3cret' }, upstream: { password: 'hunter2' }, token: 't' }, 'upstream call');
  const [line] = dest.lines();
  assert.deepEqual(line?.headers, { authorization: '[redacted]' });
  assert.deepEqual(line?.upstream, { password: '[redacted]' });
  assert.equal(line?.token, '[redacted]');
  assert.equal(JSON.stringify(line).includes('s3cret'), false);
});

test('the access logger writes to the same destination, level and line format as the process logger', () => {
  const dest = capture();
  const log = createLogger('warn', dest.stream);
  const access = accessLogger(log);
  access.info({ reqId: 'r1', status: 200 }, 'request'); // below warn: not written
  log.warn({ n: 1 }, 'first');
  access.warn({ reqId: 'r2', method: 'GET', path: '/v2/x/manifests/v1', status: 502 }, 'request');
  const lines = dest.lines();
  assert.deepEqual(lines.map((l) => l.msg), ['first', 'request']);
  const [first, req] = lines;
  assert.equal(req?.reqId, 'r2');
  assert.equal(req?.status, 502);
  for (const l of [first, req]) {
    assert.equal(l?.service, 'regmirror');
    assert.equal(l?.level, 40);
    assert.match(String(l?.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
});

test('[log] format = "text": one readable line per entry, secrets still censored, errors with their message', () => {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger('info', stream, 'text');
  log.info({ registry: 'gcr.io', bytes: 12, headers: { authorization: 'Bearer s3cret' }, note: 'two words' }, 'blob cached');
  accessLogger(log).warn({ status: 502, err: 'UNAVAILABLE: gcr.io unreachable' }, 'request');
  const lines = chunks.join('').trimEnd().split('\n');
  assert.equal(lines.length, 2);
  assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  blob cached registry=gcr\.io bytes=12 headers=\{"authorization":"\[redacted\]"\} note="two words"$/);
  assert.match(lines[1] ?? '', / WARN  request status=502 err="UNAVAILABLE: gcr.io unreachable"$/);
  assert.equal(chunks.join('').includes('s3cret'), false);
});
