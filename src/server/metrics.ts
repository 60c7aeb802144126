/**
 * Prometheus metrics (`/metrics`, DESIGN §12): `regmirror_*` series fed by the event stream, plus
 * process and Node.js series under prom-client's default names (read at scrape time). No label names a repository, tag or digest: every
 * label takes its values from a bounded set (the configured registries and local namespaces, the
 * endpoint kinds, cache results, status codes, eviction reasons).
 *
 * prom-client keeps the registry, the gauges and the text format. The per-request counters and
 * histograms are cells of their own (a tree of Maps, one level per label, down to a number or a
 * bucket array), registered with prom-client as metrics: prom-client's `inc` and `observe` hash
 * their label object on every call (0.7-1.1 µs each measured here, five updates per warm manifest
 * request); a key string joined per update was still 0.95 µs per request for both events, the
 * tree 0.21-0.29 µs.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
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

/** A tree of Maps, one level per label, whose leaves are the label sets' cells. */
type CellTree<C> = Map<string, CellTree<C> | C>;

abstract class CellMetric<C extends { labels: Record<string, string> }> {
  readonly aggregator = 'sum';
  /**
   * Found by one Map lookup per label value (no key string built per update: the label values are
   * the routing table's and the code's own strings, whose hashes V8 keeps).
   */
  private readonly tree: CellTree<C> = new Map();
  protected readonly cells: C[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    protected readonly labelNames: readonly string[],
  ) {}

  protected abstract newCell(labels: Record<string, string>): C;

  /** The cell of the label set `values` (in labelNames order), made on first use. */
  protected cell(values: readonly string[]): C {
    let level = this.tree;
    const last = this.labelNames.length - 1;
    for (let i = 0; i < last; i++) {
      const v = values[i] ?? '';
      let next = level.get(v) as CellTree<C> | undefined;
      if (next === undefined) {
        next = new Map();
        level.set(v, next);
      }
      level = next;
    }
    const leaf = values[last] ?? '';
    let c = level.get(leaf) as C | undefined;
    if (c === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = values[i] ?? '';
      });
      c = this.newCell(labels);
      level.set(leaf, c);
      this.cells.push(c);
    }
    return c;
  }

  abstract get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }>;

  reset(): void {
    this.tree.clear();
    this.cells.length = 0;
  }
}

/** A counter with label sets (cells of our own, exported through prom-client's registry). */
export class FastCounter extends CellMetric<Cell> {
  protected newCell(labels: Record<string, string>): Cell {
    return { labels, value: 0 };
  }

  /** Adds `by` to the label set `values` (in labelNames order). */
  inc(values: readonly string[], by = 1): void {
    this.cell(values).value += by;
  }

  /** The value of one label set (0 when never counted); for tests. */
  value(values: readonly string[]): number {
    return this.cells.find((c) => this.labelNames.every((n, i) => c.labels[n] === values[i]))?.value ?? 0;
  }

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    return Promise.resolve({ name: this.name, help: this.help, type: 'counter', aggregator: this.aggregator, values: this.cells.map((c) => ({ value: c.value, labels: c.labels })) });
  }
}

/** A histogram with fixed buckets and label sets (cells of our own). */
export class FastHistogram extends CellMetric<HistogramCell> {
  constructor(name: string, help: string, labelNames: readonly string[], private readonly buckets: readonly number[]) {
    super(name, help, labelNames);
  }

  protected newCell(labels: Record<string, string>): HistogramCell {
    return { labels, counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  observe(values: readonly string[], v: number): void {
    const cell = this.cell(values);
    let i = 0;
    while (i < this.buckets.length && v > (this.buckets[i] as number)) i++;
    cell.counts[i] = (cell.counts[i] ?? 0) + 1;
    cell.sum += v;
    cell.count++;
  }

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    const values: MetricValue[] = [];
    for (const c of this.cells) {
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
}

/** A series computed when /metrics is read (process figures): nothing runs between scrapes. */
class ScrapeMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'gauge' | 'counter',
    private readonly read: () => number,
  ) {}

  get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: [{ value: this.read(), labels: {} }] });
  }

  reset(): void {}
}

/**
 * The process series, under prom-client's default names, read at scrape time. Not prom-client's
 * collectDefaultMetrics: its GC PerformanceObserver works on every collection, and with it on a
 * warm manifest GET measured 3-7 % slower here; the event-loop delay monitor is a timer of its own.
 */
function processMetrics(eld: IntervalHistogram): ScrapeMetric[] {
  const started = Date.now() / 1000 - process.uptime();
  const lag = (pick: (h: IntervalHistogram) => number) => () => pick(eld) / 1e9;
  return [
    new ScrapeMetric('process_cpu_user_seconds_total', 'User CPU time spent, in seconds', 'counter', () => process.cpuUsage().user / 1e6),
    new ScrapeMetric('process_cpu_system_seconds_total', 'System CPU time spent, in seconds', 'counter', () => process.cpuUsage().system / 1e6),
    new ScrapeMetric('process_cpu_seconds_total', 'User and system CPU time spent, in seconds', 'counter', () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    }),
    new ScrapeMetric('process_resident_memory_bytes', 'Resident memory size, in bytes', 'gauge', () => process.memoryUsage.rss()),
    new ScrapeMetric('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds', 'gauge', () => started),
    new ScrapeMetric('nodejs_heap_size_total_bytes', 'V8 heap size, in bytes', 'gauge', () => process.memoryUsage().heapTotal),
    new ScrapeMetric('nodejs_heap_size_used_bytes', 'V8 heap used, in bytes', 'gauge', () => process.memoryUsage().heapUsed),
    new ScrapeMetric('nodejs_external_memory_bytes', 'Memory of C++ objects bound to JavaScript objects (buffers), in bytes', 'gauge', () => process.memoryUsage().external),
    new ScrapeMetric('nodejs_eventloop_lag_p50_seconds', 'Event-loop delay, median since the previous scrape, in seconds', 'gauge', lag((h) => h.percentile(50))),
    new ScrapeMetric('nodejs_eventloop_lag_p99_seconds', 'Event-loop delay, 99th percentile since the previous scrape, in seconds', 'gauge', lag((h) => h.percentile(99))),
    new ScrapeMetric('nodejs_eventloop_lag_max_seconds', 'Event-loop delay, largest since the previous scrape, in seconds', 'gauge', lag((h) => h.max)),
  ];
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
  /** Sampled every 20 ms; read and reset by each scrape. */
  private readonly eventLoopDelay = monitorEventLoopDelay({ resolution: 20 });
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
    this.eventLoopDelay.enable();
    for (const m of processMetrics(this.eventLoopDelay)) reg.registerMetric(m as unknown as client.Metric);
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

  /** The text exposition format (`/metrics`). The event-loop delay figures cover the time since the previous scrape. */
  async render(): Promise<string> {
    const text = await this.registry.metrics();
    this.eventLoopDelay.reset();
    return text;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    for (const u of this.unsubscribe.splice(0)) u();
    this.eventLoopDelay.disable();
  }
}
