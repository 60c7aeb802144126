/**
 * Provenance records (DESIGN §4): for every manifest the mirror stores or serves, where its bytes
 * came from, when, the upstream's own digest header, and how often it was a hit or a miss; index
 * children; global byte counters. Counters arrive in batches (see mirror/provenance-recorder.ts),
 * never as a SQLite write per request. No credential is ever stored here.
 */
import type { Database as Db, Statement } from 'better-sqlite3';

export interface ProvenanceSource {
  registry: string;
  repository: string;
  mediaType: string;
  size: number;
  source: 'upstream' | 'push' | 'import';
  /** Endpoint URL for upstream content (never with credentials). */
  sourceUrl?: string;
  upstreamDigest?: string;
}

export interface ProvenanceRecord extends ProvenanceSource {
  repo: string;
  digest: string;
  firstFetched: number;
  lastChecked?: number;
  lastServed?: number;
  hits: number;
  misses: number;
}

export interface ChildManifest {
  digest: string;
  mediaType?: string;
  platform?: string;
}

/** Counter deltas for one (repo, digest). */
export interface ServeDelta {
  hits: number;
  misses: number;
  lastServed: number;
}

export interface ProvenanceFilter {
  registry?: string;
  repository?: string;
  /** Only records first fetched at or after this time (ms). */
  since?: number;
  limit: number;
  offset: number;
}

interface Row {
  repo: string;
  digest: string;
  registry: string;
  repository: string;
  media_type: string;
  size: number;
  source: string;
  source_url: string | null;
  upstream_digest: string | null;
  first_fetched: number;
  last_checked: number | null;
  last_served: number | null;
  hits: number;
  misses: number;
}

function toRecord(r: Row): ProvenanceRecord {
  const rec: ProvenanceRecord = {
    repo: r.repo,
    digest: r.digest,
    registry: r.registry,
    repository: r.repository,
    mediaType: r.media_type,
    size: r.size,
    source: r.source as ProvenanceRecord['source'],
    firstFetched: r.first_fetched,
    hits: r.hits,
    misses: r.misses,
  };
  if (r.source_url !== null) rec.sourceUrl = r.source_url;
  if (r.upstream_digest !== null) rec.upstreamDigest = r.upstream_digest;
  if (r.last_checked !== null) rec.lastChecked = r.last_checked;
  if (r.last_served !== null) rec.lastServed = r.last_served;
  return rec;
}

export class SqliteProvenanceStore {
  private readonly st: {
    record: Statement<[string, string, string, string, string, number, string, string | null, string | null, number, number]>;
    checked: Statement<[number, string, string]>;
    serve: Statement<[number, number, number, string, string]>;
    get: Statement<[string, string], Row>;
    child: Statement<[string, string, number, string | null, string | null]>;
    children: Statement<[string], { child: string; media_type: string | null; platform: string | null }>;
    addCounter: Statement<[string, number]>;
    counters: Statement<[], { name: string; value: number }>;
    totals: Statement<[], { manifests: number; hits: number | null; misses: number | null }>;
    blobTotals: Statement<[], { blobs: number; bytes: number | null }>;
  };

  constructor(private readonly db: Db) {
    this.st = {
      record: db.prepare(
        `INSERT INTO provenance (repo, digest, registry, repository, media_type, size, source, source_url, upstream_digest, first_fetched, last_checked)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (repo, digest) DO UPDATE SET last_checked = excluded.last_checked,
           upstream_digest = COALESCE(excluded.upstream_digest, provenance.upstream_digest)`,
      ),
      checked: db.prepare('UPDATE provenance SET last_checked = ? WHERE repo = ? AND digest = ?'),
      serve: db.prepare('UPDATE provenance SET hits = hits + ?, misses = misses + ?, last_served = MAX(COALESCE(last_served, 0), ?) WHERE repo = ? AND digest = ?'),
      get: db.prepare('SELECT * FROM provenance WHERE repo = ? AND digest = ?'),
      child: db.prepare('INSERT OR IGNORE INTO manifest_children (parent, child, position, media_type, platform) VALUES (?, ?, ?, ?, ?)'),
      children: db.prepare('SELECT child, media_type, platform FROM manifest_children WHERE parent = ? ORDER BY position'),
      addCounter: db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value'),
      counters: db.prepare('SELECT name, value FROM counters'),
      totals: db.prepare('SELECT COUNT(*) AS manifests, SUM(hits) AS hits, SUM(misses) AS misses FROM provenance'),
      blobTotals: db.prepare('SELECT COUNT(*) AS blobs, SUM(size) AS bytes FROM blobs'),
    };
  }

  /** Records a manifest stored from a source (first time) or checked again (later times). */
  record(repo: string, digest: string, src: ProvenanceSource, now: number, children: readonly ChildManifest[] = []): void {
    this.db.transaction(() => {
      this.st.record.run(repo, digest, src.registry, src.repository, src.mediaType, src.size, src.source, src.sourceUrl ?? null, src.upstreamDigest ?? null, now, now);
      children.forEach((c, i) => this.st.child.run(digest, c.digest, i, c.mediaType ?? null, c.platform ?? null));
    })();
  }

  /** Notes that the upstream confirmed `digest` for `repo` now (tag revalidation). */
  checked(repo: string, digest: string, now: number): void {
    this.st.checked.run(now, repo, digest);
  }

  /** Applies a batch of serve counters and global counters in one transaction. */
  applyBatch(serves: ReadonlyMap<string, ServeDelta>, counters: ReadonlyMap<string, number>): void {
    if (serves.size === 0 && counters.size === 0) return;
    this.db.transaction(() => {
      for (const [key, d] of serves) {
        const nl = key.indexOf('\n');
        this.st.serve.run(d.hits, d.misses, d.lastServed, key.slice(0, nl), key.slice(nl + 1));
      }
      for (const [name, v] of counters) if (v !== 0) this.st.addCounter.run(name, v);
    })();
  }

  get(repo: string, digest: string): ProvenanceRecord | undefined {
    const r = this.st.get.get(repo, digest);
    return r === undefined ? undefined : toRecord(r);
  }

  children(digest: string): ChildManifest[] {
    return this.st.children.all(digest).map((c) => {
      const out: ChildManifest = { digest: c.child };
      if (c.media_type !== null) out.mediaType = c.media_type;
      if (c.platform !== null) out.platform = c.platform;
      return out;
    });
  }

  /** Lists records, newest first, with filters and offset paging. */
  list(f: ProvenanceFilter): ProvenanceRecord[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (f.registry !== undefined) {
      where.push('registry = ?');
      args.push(f.registry);
    }
    if (f.repository !== undefined) {
      where.push('repository = ?');
      args.push(f.repository);
    }
    if (f.since !== undefined) {
      where.push('first_fetched >= ?');
      args.push(f.since);
    }
    const sql = `SELECT * FROM provenance ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY first_fetched DESC, repo, digest LIMIT ? OFFSET ?`;
    return this.db.prepare<Array<string | number>, Row>(sql).all(...args, f.limit, f.offset).map(toRecord);
  }

  counters(): Record<string, number> {
    return Object.fromEntries(this.st.counters.all().map((r) => [r.name, r.value]));
  }

  totals(): { manifests: number; hits: number; misses: number; blobs: number; blobBytes: number } {
    const t = this.st.totals.get();
    const b = this.st.blobTotals.get();
    return { manifests: t?.manifests ?? 0, hits: t?.hits ?? 0, misses: t?.misses ?? 0, blobs: b?.blobs ?? 0, blobBytes: b?.bytes ?? 0 };
  }
}
