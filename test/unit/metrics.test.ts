import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventStream } from '../../src/events/index.ts';
import { FastCounter, FastHistogram, Metrics } from '../../src/server/metrics.ts';

/** The sample lines of one series (`name{labels} value`), without comments. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

function make(now = () => 1_700_000_000_000) {
  const events = new EventStream();
  let cacheReads = 0;
  const m = new Metrics({
    events,
    fillStats: () => ({ fills: 2, readers: 5 }),
    cacheObjects: () => {
      cacheReads++;
      return Promise.resolve({ blobs: { count: 3, bytes: 3000 }, manifests: { count: 2, bytes: 400 } });
    },
    version: '9.9.9',
    now,
  });
  return { events, m, cacheReads: () => cacheReads };
}

const request = (over: Partial<Parameters<EventStream['emit']>[1]> & Record<string, unknown>) => ({
  reqId: 'r', method: 'GET', path: '/v2/x', kind: 'manifest' as const, status: 200, registry: 'gcr.io', repo: 'a/b', digest: undefined, cache: 'hit' as const, durationMs: 0.7, complete: true, error: undefined, ...over,
});

test('requests are counted by registry, kind, cache result and code, with a cumulative duration histogram', async () => {
  const { events, m } = make();
  events.emit('request', request({}));
  events.emit('request', request({ durationMs: 3 }));
  events.emit('request', request({ cache: 'miss', durationMs: 40 }));
  events.emit('request', request({ status: 404, cache: undefined, durationMs: 2000 }));
  events.emit('request', request({ kind: 'health', registry: undefined, cache: undefined }));
  const text = await m.render();
  assert.deepEqual(samples(text, 'regmirror_http_requests_total'), [
    'regmirror_http_requests_total{registry="gcr.io",kind="manifest",cache="hit",code="200"} 2',
    'regmirror_http_requests_total{registry="gcr.io",kind="manifest",cache="miss",code="200"} 1',
    'regmirror_http_requests_total{registry="gcr.io",kind="manifest",cache="",code="404"} 1',
    'regmirror_http_requests_total{registry="",kind="health",cache="",code="200"} 1',
  ]);
  const buckets = samples(text, 'regmirror_http_request_duration_seconds_bucket').filter((l) => l.includes('kind="manifest"'));
  const at = (le: string): string | undefined => buckets.find((l) => l.includes(`le="${le}"`))?.split(' ')[1];
  assert.equal(at('0.001'), '1');
  assert.equal(at('0.005'), '2');
  assert.equal(at('0.05'), '3');
  assert.equal(at('2.5'), '4');
  assert.equal(at('+Inf'), '4');
  assert.deepEqual(samples(text, 'regmirror_http_request_duration_seconds_count'), [
    'regmirror_http_request_duration_seconds_count{registry="gcr.io",kind="manifest"} 4',
    'regmirror_http_request_duration_seconds_count{registry="",kind="health"} 1',
  ]);
  assert.match(text, /# TYPE regmirror_http_request_duration_seconds histogram/);
  assert.match(text, /# TYPE regmirror_http_requests_total counter/);
});

test('bytes served by cache result, bytes fetched upstream, fills, upstream requests, rate limit and last contact', async () => {
  const { events, m } = make(() => 1_700_000_123_000);
  events.emit('manifestServed', { registry: 'gcr.io', repo: 'a/b', digest: 'sha256:x', cache: 'hit', at: 1, bytes: 500 });
  events.emit('manifestServed', { registry: 'gcr.io', repo: 'a/b', digest: 'sha256:x', cache: 'hit', at: 1, bytes: 0 });
  events.emit('blobServed', { registry: 'gcr.io', repo: 'a/b', digest: 'sha256:y', cache: 'miss', bytes: 1000 });
  events.emit('blobServed', { registry: 'gcr.io', repo: 'a/b', digest: 'sha256:y', cache: 'hit', bytes: 1000 });
  events.emit('fillFinished', { registry: 'gcr.io', repo: 'a/b', digest: 'sha256:y', bytes: 1000, durationMs: 5, outcome: 'stored' });
  events.emit('upstreamBytes', { registry: 'gcr.io', kind: 'manifest', bytes: 500 });
  events.emit('upstreamRequest', { registry: 'docker.io', method: 'GET', kind: 'manifest', status: 200, durationMs: 20, rateLimitRemaining: 97 });
  events.emit('upstreamRequest', { registry: 'docker.io', method: 'GET', kind: 'blob', status: undefined, durationMs: 3, error: 'ECONNRESET' });
  events.emit('evicted', { digest: 'sha256:z', bytes: 4096, reason: 'budget' });
  const text = await m.render();
  assert.deepEqual(samples(text, 'regmirror_served_bytes_total'), [
    'regmirror_served_bytes_total{registry="gcr.io",kind="manifest",cache="hit"} 500',
    'regmirror_served_bytes_total{registry="gcr.io",kind="blob",cache="miss"} 1000',
    'regmirror_served_bytes_total{registry="gcr.io",kind="blob",cache="hit"} 1000',
  ]);
  assert.deepEqual(samples(text, 'regmirror_upstream_bytes_total'), [
    'regmirror_upstream_bytes_total{registry="gcr.io",kind="blob"} 1000',
    'regmirror_upstream_bytes_total{registry="gcr.io",kind="manifest"} 500',
  ]);
  assert.deepEqual(samples(text, 'regmirror_fills_total'), ['regmirror_fills_total{registry="gcr.io",outcome="stored"} 1']);
  assert.deepEqual(samples(text, 'regmirror_upstream_requests_total'), [
    'regmirror_upstream_requests_total{registry="docker.io",method="GET",kind="manifest",code="200"} 1',
    'regmirror_upstream_requests_total{registry="docker.io",method="GET",kind="blob",code="error"} 1',
  ]);
  assert.deepEqual(samples(text, 'regmirror_upstream_ratelimit_remaining'), ['regmirror_upstream_ratelimit_remaining{registry="docker.io"} 97']);
  // Only the answered request counts as contact.
  assert.deepEqual(samples(text, 'regmirror_upstream_last_success_timestamp_seconds'), ['regmirror_upstream_last_success_timestamp_seconds{registry="docker.io"} 1700000123']);
  assert.deepEqual(samples(text, 'regmirror_evictions_total'), ['regmirror_evictions_total{reason="budget"} 1']);
  assert.deepEqual(samples(text, 'regmirror_evicted_bytes_total'), ['regmirror_evicted_bytes_total{reason="budget"} 4096']);
  assert.deepEqual(samples(text, 'regmirror_fills_in_flight'), ['regmirror_fills_in_flight 2']);
  assert.deepEqual(samples(text, 'regmirror_fill_readers'), ['regmirror_fill_readers 5']);
  assert.deepEqual(samples(text, 'regmirror_cache_bytes'), ['regmirror_cache_bytes{kind="blob"} 3000', 'regmirror_cache_bytes{kind="manifest"} 400']);
  assert.deepEqual(samples(text, 'regmirror_cache_objects'), ['regmirror_cache_objects{kind="blob"} 3', 'regmirror_cache_objects{kind="manifest"} 2']);
  assert.deepEqual(samples(text, 'regmirror_build_info'), [`regmirror_build_info{version="9.9.9",nodejs="${process.versions.node}"} 1`]);
  // The process series, under prom-client's default names.
  assert.match(text, /^# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total [\d.e+-]+$/m);
  assert.match(text, /^process_resident_memory_bytes \d+$/m);
  assert.match(text, /^nodejs_eventloop_lag_p99_seconds [\d.e+-]+$/m);
  assert.match(text, /^nodejs_heap_size_used_bytes \d+$/m);
});

test('the cache size is read at most once per 5 s however often /metrics is scraped; close() unsubscribes', async () => {
  let t = 0;
  const { events, m, cacheReads } = make(() => t);
  await m.render();
  await m.render();
  assert.equal(cacheReads(), 1);
  t = 5_000;
  await m.render();
  assert.equal(cacheReads(), 2);
  m.close();
  assert.equal(events.has('request'), false);
  assert.equal(events.has('upstreamRequest'), false);
});

test('FastCounter and FastHistogram: label sets by joined values, bucket edges inclusive (le)', async () => {
  const c = new FastCounter('t_total', 'h', ['a', 'b']);
  c.inc(['x', 'y']);
  c.inc(['x', 'y'], 4);
  c.inc(['x', 'z']);
  assert.equal(c.value(['x', 'y']), 5);
  assert.equal(c.value(['q', 'q']), 0);
  const h = new FastHistogram('t_seconds', 'h', ['a'], [1, 2]);
  h.observe(['x'], 1);
  h.observe(['x'], 1.5);
  h.observe(['x'], 9);
  const v = (await h.get()).values.map((s) => `${s.metricName ?? ''}${JSON.stringify(s.labels)}=${s.value}`);
  assert.deepEqual(v, [
    't_seconds_bucket{"a":"x","le":1}=1',
    't_seconds_bucket{"a":"x","le":2}=2',
    't_seconds_bucket{"a":"x","le":"+Inf"}=3',
    't_seconds_sum{"a":"x"}=11.5',
    't_seconds_count{"a":"x"}=3',
  ]);
});
