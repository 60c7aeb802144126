/**
 * One stream of what the mirror does (DESIGN §6 "events"): manifests and blobs served, fills
 * started and finished, upstream requests, requests answered, evictions. Provenance counters and the
 * access log subscribe; metrics are one more subscriber. Emitters check `has(type)` before building
 * an event, so a type nobody listens to costs one array-length check on the hot path.
 */
/** How a response was served (the X-Regmirror-Cache header). */
export type CacheResult = 'hit' | 'miss' | 'stale';

/** The endpoint a request asked for (a bounded set: the metrics label requests by it). */
export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'ping' | 'token' | 'api' | 'metrics' | 'health' | 'other';

export interface MirrorEvents {
  /** A manifest answered (GET or HEAD), by tag or digest. */
  manifestServed: { registry: string; repo: string; digest: string; cache: CacheResult; at: number; /** Body bytes (0 for a HEAD). */ bytes: number };
  /** A blob answer started: `bytes` is what the response will carry (range length). */
  blobServed: { registry: string; repo: string; digest: string; cache: CacheResult; bytes: number };
  fillStarted: { registry: string; repo: string; digest: string; size: number | undefined };
  fillFinished: { registry: string; repo: string; digest: string; bytes: number; durationMs: number; outcome: 'stored' | 'failed' | 'relayed'; error?: string };
  /** One request to an upstream registry (the answer's head arrived, or it failed). */
  upstreamRequest: {
    registry: string;
    method: string;
    kind: 'manifest' | 'blob' | 'tags' | 'token' | 'other';
    status: number | undefined;
    durationMs: number;
    error?: string;
    /** The answer's `ratelimit-remaining` (Docker Hub: `100;w=21600`), when it had one. */
    rateLimitRemaining?: number;
  };
  /** A manifest or tag-list body read from an upstream (blob bytes are in fillFinished). */
  upstreamBytes: { registry: string; kind: 'manifest' | 'tags'; bytes: number };
  /** One HTTP request answered by the mirror (fired when its response closed). */
  request: {
    reqId: string;
    method: string;
    path: string;
    /** What was asked for: a registry API endpoint, the ping, the token endpoint, the mirror's API, or none. */
    kind: RequestKind;
    status: number;
    registry: string | undefined;
    repo: string | undefined;
    digest: string | undefined;
    cache: CacheResult | undefined;
    /** From the request's arrival to its response's close (fractional). */
    durationMs: number;
    complete: boolean;
    /** The error code and message the client was answered with (undefined: not an error). */
    error: string | undefined;
  };
  /** Content removed from the cache (room for the lifecycle work). */
  evicted: { digest: string; bytes: number; reason: string };
}

export type EventType = keyof MirrorEvents;
type Listener<T extends EventType> = (e: MirrorEvents[T]) => void;

/** A typed, synchronous event stream. A listener that throws is reported and skipped, never fatal. */
export class EventStream {
  private readonly listeners: { [T in EventType]?: Array<Listener<T>> } = {};

  constructor(private readonly onListenerError: (type: EventType, e: unknown) => void = () => undefined) {}

  /** Whether anyone listens to `type`: check before building an event on a hot path. */
  has(type: EventType): boolean {
    const l = this.listeners[type];
    return l !== undefined && l.length > 0;
  }

  /** Subscribes; returns the function that unsubscribes. */
  on<T extends EventType>(type: T, fn: Listener<T>): () => void {
    const list = (this.listeners[type] ??= []) as Array<Listener<T>>;
    list.push(fn);
    return () => {
      const i = list.indexOf(fn);
      if (i !== -1) list.splice(i, 1);
    };
  }

  emit<T extends EventType>(type: T, event: MirrorEvents[T]): void {
    const list = this.listeners[type] as Array<Listener<T>> | undefined;
    if (list === undefined) return;
    for (const fn of list) {
      try {
        fn(event);
      } catch (e) {
        this.onListenerError(type, e);
      }
    }
  }
}
