/**
 * Prometheus metrics (`/metrics`, DESIGN §12): `regmirror_*` series fed by the event stream, plus
 * prom-client's process and Node.js series. No label names a repository, tag or digest: every
 * label takes its values from a bounded set (the configured registries and local namespaces, the
 * endpoint kinds, cache results, status codes, eviction reasons).
 *
 * prom-client keeps the registry, the gauges and the text format. The per-request counters and
 * histograms are cells of their own (a Map from the joined label values to a number or a bucket
 * array), registered with prom-client as metrics: prom-client's `inc` and `observe` hash their
 * label object on every call, 0.7-1.1 µs each measured here, which on a warm manifest request
 * (five updates) would have been several per cent of its CPU.
 */
import client from 'prom-client';
import type { EventStream, MirrorEvents } from '../events/index.ts';

/** One label set's value (counter) or buckets (histogram). */
interface Cell {
  labels: Record<string, string>;
  value: number;
}
interface HistogramCell {
  labels: Record<string, string>;
  /** Observations per bucket (not cumulative; summed when exported), the last one is +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

/** The shape prom-client's registry reads from a metric (`get()`), as its own metrics return. */
interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

abstract class CellMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    protected readonly labelNames: readonly string[],
  ) {}

  protected labelsOf(values: readonly string[]): Record<string, string> {
    const labels: Record<string, string> = {};
    this.labelNames.forEach((n, i) => {
      labels[n] = values[i] ?? '';
    });
    return labels;
  }

  abstract get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }>;
  abstract reset(): void;
}

/** A counter whose label sets are found by their joined values. */
export class FastCounter extends CellMetric {
  private readonly cells = new Map<string, Cell>();

  /** Adds `by` to the label set `values` (in labelNames order). */
  inc(values: readonly string[], by = 1): void {
    const key = values.join('\u0000');
    let cell = this.cells.get(key);
    if (cell === undefined) {
      cell = { labels: this.labelsOf(values), value: 0 };
      this.cells.set(key, cell);
    }
    cell.value += by;
  }

  /** The value of one label set (0 when never counted); for tests and the JSON summary. */
  value(values: readonly string[]): number {
    return this.cells.get(values.join('\u0000'))?.value ?? 0;
  }

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    return Promise.resolve({ name: this.name, help: this.help, type: 'counter', aggregator: this.aggregator, values: [...this.cells.values()].map((c) => ({ value: c.value, labels: c.labels })) });
  }

  reset(): void {
    this.cells.clear();
  }
}

/** A histogram with fixed buckets whose label sets are found by their joined values. */
export class FastHistogram extends CellMetric {
  private readonly cells = new Map<string, HistogramCell>();

  constructor(name: string, help: string, labelNames: readonly string[], private readonly buckets: readonly number[]) {
    super(name, help, labelNames);
  }

  observe(values: readonly string[], v: number): void {
    const key = values.join('\u0000');
    let cell = this.cells.get(key);
    if (cell === undefined) {
      cell = { labels: this.labelsOf(values), counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
      this.cells.set(key, cell);
    }
    let i = 0;
    while (i < this.buckets.length && v > (this.buckets[i] as number)) i++;
    cell.counts[i] = (cell.counts[i] ?? 0) + 1;
    cell.sum += v;
    cell.count++;
  }

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    const values: MetricValue[] = [];
    for (const c of this.cells.values()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += c.counts[i] ?? 0;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...c.labels, le }, value: acc });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...c.labels, le: '+Inf' }, value: c.count });
      values.push({ metricName: `${this.name}_sum`, labels: c.labels, value: c.sum });
      values.push({ metricName: `${this.name}_count`, labels: c.labels, value: c.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: 'histogram', aggregator: this.aggregator, values });
  }

  reset(): void {
    this.cells.clear();
  }
}

/** Request durations: a warm hit is well under a millisecond, a cold layer can take minutes. */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface MetricsSources {
  events: EventStream;
  /** Blob fills downloading now and the clients following them. */
  fillStats: () => { fills: number; readers: number };
  /** Rows and bytes in the cache (a query: read at most once per `cacheStatsMs`). */
  cacheObjects: () => Promise<{ blobs: { count: number; bytes: number }; manifests: { count: number; bytes: number } }>;
  version: string;
  /** How long a cache size read is reused (default 5 s: a scrape does not scan the metadata each time). */
  cacheStatsMs?: number;
  now?: () => number;
}

/** The status label: the code, or `error` for a response that never got one. */
const code = (status: number | undefined): string => (status === undefined ? 'error' : String(status));

/**
 * The mirror's metrics. Subscribes to `sources.events` on construction; `close()` unsubscribes.
 * `render()` is the `/metrics` body.
 */
export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new FastCounter('regmirror_http_requests_total', 'Requests answered, by registry (or local/<namespace>), endpoint kind, cache result and status code', ['registry', 'kind', 'cache', 'code']);
  readonly requestDuration = new FastHistogram('regmirror_http_request_duration_seconds', 'Time from a request\'s arrival to the end of its response, by registry and endpoint kind', ['registry', 'kind'], REQUEST_BUCKETS);
  readonly servedBytes = new FastCounter('regmirror_served_bytes_total', 'Body bytes of manifests and blobs served, by registry, kind and cache result (hit: from the cache; miss: while filling from the upstream; stale: a cached manifest after an upstream failure)', ['registry', 'kind', 'cache']);
  readonly upstreamBytes = new FastCounter('regmirror_upstream_bytes_total', 'Bytes read from upstream registries, by registry and kind (blob bytes as fills end)', ['registry', 'kind']);
  readonly upstreamRequests = new FastCounter('regmirror_upstream_requests_total', 'Requests sent to upstream registries, by registry, method, kind and status code (error: no answer)', ['registry', 'method', 'kind', 'code']);
  readonly upstreamDuration = new FastHistogram('regmirror_upstream_request_duration_seconds', 'Time until an upstream answer\'s head arrived, by registry and kind', ['registry', 'kind'], UPSTREAM_BUCKETS);
  readonly fills = new FastCounter('regmirror_fills_total', 'Blob fills that ended, by registry and outcome (stored, failed, relayed: streamed without caching)', ['registry', 'outcome']);
  readonly evictions = new FastCounter('regmirror_evictions_total', 'Images removed from the cache (each with the blobs no kept image shares), by reason', ['reason']);
  readonly evictedBytes = new FastCounter('regmirror_evicted_bytes_total', 'Bytes removed from the cache, by reason', ['reason']);
  private readonly unsubscribe: Array<() => void> = [];
  private readonly lastSuccess = new Map<string, number>();
  private readonly rateLimit = new Map<string, number>();
  private cacheRead: { at: number; value: Promise<Awaited<ReturnType<MetricsSources['cacheObjects']>>> } | undefined;

  constructor(private readonly sources: MetricsSources) {
    const { events } = sources;
    const now = sources.now ?? Date.now;
    const reg = this.registry;
    for (const m of [this.requests, this.requestDuration, this.servedBytes, this.upstreamBytes, this.upstreamRequests, this.upstreamDuration, this.fills, this.evictions, this.evictedBytes]) {
      reg.registerMetric(m as unknown as client.Metric);
    }
    client.collectDefaultMetrics({ register: reg });
    new client.Gauge({ name: 'regmirror_build_info', help: 'The running build: version and Node.js version (always 1)', labelNames: ['version', 'nodejs'], registers: [reg] }).set({ version: sources.version, nodejs: process.versions.node }, 1);
    const fillGauge = (name: string, help: string, pick: (s: { fills: number; readers: number }) => number): void => {
      new client.Gauge({
        name,
        help,
        registers: [reg],
        collect() {
          this.set(pick(sources.fillStats()));
        },
      });
    };
    fillGauge('regmirror_fills_in_flight', 'Blob fills downloading from an upstream now', (s) => s.fills);
    fillGauge('regmirror_fill_readers', 'Clients following a blob fill now (reading while it downloads)', (s) => s.readers);
    const cacheGauge = (name: string, help: string, pick: (o: Awaited<ReturnType<MetricsSources['cacheObjects']>>, kind: 'blobs' | 'manifests') => number): void => {
      const read = (): Promise<Awaited<ReturnType<MetricsSources['cacheObjects']>>> => this.cacheObjects(now());
      new client.Gauge({
        name,
        help,
        labelNames: ['kind'],
        registers: [reg],
        async collect() {
          const o = await read();
          this.set({ kind: 'blob' }, pick(o, 'blobs'));
          this.set({ kind: 'manifest' }, pick(o, 'manifests'));
        },
      });
    };
    cacheGauge('regmirror_cache_bytes', 'Bytes of the blobs and manifests in the cache (what [cache] max_size counts)', (o, k) => o[k].bytes);
    cacheGauge('regmirror_cache_objects', 'Blobs and manifests in the cache', (o, k) => o[k].count);
    const lastSuccess = this.lastSuccess;
    new client.Gauge({
      name: 'regmirror_upstream_last_success_timestamp_seconds',
      help: 'When an upstream registry last answered a request without a server error (Unix time)',
      labelNames: ['registry'],
      registers: [reg],
      collect() {
        for (const [registry, at] of lastSuccess) this.set({ registry }, at / 1000);
      },
    });
    const rateLimit = this.rateLimit;
    new client.Gauge({
      name: 'regmirror_upstream_ratelimit_remaining',
      help: 'The last ratelimit-remaining an upstream sent (Docker Hub\'s pull limit), by registry',
      labelNames: ['registry'],
      registers: [reg],
      collect() {
        for (const [registry, n] of rateLimit) this.set({ registry }, n);
      },
    });

    const on = <T extends keyof MirrorEvents>(type: T, fn: (e: MirrorEvents[T]) => void): void => {
      this.unsubscribe.push(events.on(type, fn));
    };
    on('request', (e) => {
      const registry = e.registry ?? '';
      this.requests.inc([registry, e.kind, e.cache ?? '', code(e.status)]);
      this.requestDuration.observe([registry, e.kind], e.durationMs / 1000);
    });
    on('manifestServed', (e) => {
      if (e.bytes > 0) this.servedBytes.inc([e.registry, 'manifest', e.cache], e.bytes);
    });
    on('blobServed', (e) => {
      if (e.bytes > 0) this.servedBytes.inc([e.registry, 'blob', e.cache], e.bytes);
    });
    on('fillFinished', (e) => {
      this.fills.inc([e.registry, e.outcome]);
      this.upstreamBytes.inc([e.registry, 'blob'], e.bytes);
    });
    on('upstreamBytes', (e) => this.upstreamBytes.inc([e.registry, e.kind], e.bytes));
    on('upstreamRequest', (e) => {
      this.upstreamRequests.inc([e.registry, e.method, e.kind, code(e.status)]);
      this.upstreamDuration.observe([e.registry, e.kind], e.durationMs / 1000);
      if (e.status !== undefined && e.status < 500) this.lastSuccess.set(e.registry, now());
      if (e.rateLimitRemaining !== undefined) this.rateLimit.set(e.registry, e.rateLimitRemaining);
    });
    on('evicted', (e) => {
      this.evictions.inc([e.reason]);
      this.evictedBytes.inc([e.reason], e.bytes);
    });
  }

  private cacheObjects(at: number): Promise<Awaited<ReturnType<MetricsSources['cacheObjects']>>> {
    const ttl = this.sources.cacheStatsMs ?? 5_000;
    if (this.cacheRead === undefined || at - this.cacheRead.at >= ttl) {
      const value = this.sources.cacheObjects();
      this.cacheRead = { at, value };
      value.catch(() => {
        if (this.cacheRead?.value === value) this.cacheRead = undefined;
      });
    }
    return this.cacheRead.value;
  }

  /** The text exposition format (`/metrics`). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    for (const u of this.unsubscribe.splice(0)) u();
  }
}
