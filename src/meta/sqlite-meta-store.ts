/**
 * SqliteMetaStore: the MetaStore (meta-store.ts) on one SQLite database (better-sqlite3, WAL) —
 * DESIGN §5. Pragmas at open, statements prepared once, schema version explicit.
 *
 * better-sqlite3 is synchronous; the async MetaStore contract is kept by a thin facade over the
 * synchronous tables. A transaction(fn) whose fn awaits holds a gate: calls from outside the
 * transaction wait for it to end, so they never land inside it on the shared connection.
 * Other processes' commits are seen through `PRAGMA data_version` (generation()), and announced by
 * watchCommits: an inotify watch (fs.watch) on the database's folder reports every write to the
 * database or its WAL, so the caching decorator runs that check only after a write and not once a
 * millisecond under load (each PRAGMA is a WAL read transaction: 16-21 µs on average under the
 * 64-connection manifest load, up to 3.8 ms, and 7-10 % of the CPU per warm manifest request).
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import type {
  RemovedContent,
  CacheInventory,
  CacheObjects,
  CachedManifest,
  CachedObject,
  ChildManifest,
  ManifestEntry,
  ManifestRecord,
  MetaStore,
  MetaTotals,
  Pin,
  ProvenanceFilter,
  ProvenanceRecord,
  ServeDelta,
  TagRecord,
  UploadRecord,
} from './meta-store.ts';
import { PIN_PREVIOUS_MS } from './meta-store.ts';

/**
 * 1: blobs, manifests, tags, repo links. 2: provenance records, index children, counters. 3: upload
 * sessions. 4: the cache lifecycle: manifests.accessed_at, manifest → blob references, pins.
 */
export const SCHEMA_VERSION = 4;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
  digest      TEXT PRIMARY KEY,
  size        INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  accessed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS manifests (
  digest      TEXT PRIMARY KEY,
  media_type  TEXT NOT NULL,
  size        INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  accessed_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
  repo        TEXT NOT NULL,
  tag         TEXT NOT NULL,
  digest      TEXT NOT NULL,
  fetched_at  INTEGER NOT NULL,
  checked_at  INTEGER NOT NULL,
  PRIMARY KEY (repo, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_content (
  repo        TEXT NOT NULL,
  digest      TEXT NOT NULL,
  PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS provenance (
  repo            TEXT NOT NULL,
  digest          TEXT NOT NULL,
  registry        TEXT NOT NULL,
  repository      TEXT NOT NULL,
  media_type      TEXT NOT NULL,
  size            INTEGER NOT NULL,
  source          TEXT NOT NULL,
  source_url      TEXT,
  upstream_digest TEXT,
  first_fetched   INTEGER NOT NULL,
  last_checked    INTEGER,
  last_served     INTEGER,
  hits            INTEGER NOT NULL DEFAULT 0,
  misses          INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provenance_by_time ON provenance (first_fetched);
CREATE TABLE IF NOT EXISTS manifest_children (
  parent      TEXT NOT NULL,
  child       TEXT NOT NULL,
  position    INTEGER NOT NULL,
  media_type  TEXT,
  platform    TEXT,
  PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS children_by_child ON manifest_children (child);
CREATE TABLE IF NOT EXISTS manifest_blobs (
  manifest    TEXT NOT NULL,
  blob        TEXT NOT NULL,
  PRIMARY KEY (manifest, blob)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manifest_blobs_by_blob ON manifest_blobs (blob);
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (digest);
CREATE INDEX IF NOT EXISTS repo_content_by_digest ON repo_content (digest);
CREATE INDEX IF NOT EXISTS provenance_by_digest ON provenance (digest);
CREATE TABLE IF NOT EXISTS pins (
  repo        TEXT NOT NULL,
  reference   TEXT NOT NULL,
  source      TEXT NOT NULL,
  until       INTEGER,
  PRIMARY KEY (repo, reference)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
  id          TEXT PRIMARY KEY,
  repo        TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
`;

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


/** How long blob read times wait in memory before they are written in one transaction. */
const READ_FLUSH_MS = 30_000;
/** Rows per inventory statement. */
const INVENTORY_PAGE = 2000;

/** A lifecycle row as the lifecycle sees it: last use is never before creation. */
function cachedObject(r: { digest: string; size: number; created_at: number; accessed_at: number }): CachedObject {
  return { digest: r.digest, size: r.size, createdAt: r.created_at, usedAt: Math.max(r.accessed_at, r.created_at) };
}

/** The synchronous tables under the facade; every method is one or a few prepared statements. */
class SqliteTables {
  readonly db: Db;
  private readonly st;
  /** Blob reads not yet written (noteBlobRead), one record per digest, updated in place. */
  readonly reads = new Map<string, { at: number; size: number }>();
  /** Manifest serves not yet written (noteManifestRead). */
  readonly manifestReads = new Map<string, { at: number }>();

  constructor(path: string) {
    const db = new Database(path);
    this.db = db;
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('temp_store = MEMORY');
    const hadManifests = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'manifests'").get() !== undefined;
    if (hadManifests && !db.prepare<[], { name: string }>('PRAGMA table_info(manifests)').all().some((c) => c.name === 'accessed_at')) {
      // Schema 3 → 4: a manifest's last use starts at its creation; its blob references are
      // indexed from its bytes at the next start-up reconciliation (blob_refs_pending).
      db.exec('ALTER TABLE manifests ADD COLUMN accessed_at INTEGER NOT NULL DEFAULT 0; UPDATE manifests SET accessed_at = created_at');
      db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('blob_refs_pending', '1')").run();
    }
    db.exec(SCHEMA);
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'blobs_by_access'").get() === undefined) {
      // The unreferenced blobs in order of last use (orphanBlobs) walk this index; a blob's
      // accessed_at is never before its creation (older versions could leave it so once).
      db.exec('UPDATE blobs SET accessed_at = created_at WHERE accessed_at < created_at; CREATE INDEX blobs_by_access ON blobs (accessed_at, digest)');
    }
    const row = db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'schema_version'").get();
    if (row === undefined) {
      db.prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
    } else if (Number(row.value) > SCHEMA_VERSION) {
      db.close();
      throw new Error(`metadata schema version ${row.value} is newer than this regmirror understands (${SCHEMA_VERSION})`);
    } else if (Number(row.value) < SCHEMA_VERSION) {
      // Every schema step so far adds tables (CREATE ... IF NOT EXISTS above) or a column (above).
      db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(SCHEMA_VERSION));
    }
    this.st = {
      getTag: db.prepare<[string, string], { digest: string; fetched_at: number; checked_at: number }>('SELECT digest, fetched_at, checked_at FROM tags WHERE repo = ? AND tag = ?'),
      putTag: db.prepare<[string, string, string, number, number]>(
        `INSERT INTO tags (repo, tag, digest, fetched_at, checked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at, checked_at = excluded.checked_at`,
      ),
      touchTag: db.prepare<[number, string, string, string]>('UPDATE tags SET checked_at = ? WHERE repo = ? AND tag = ? AND digest = ?'),
      listTags: db.prepare<[string], { tag: string }>('SELECT tag FROM tags WHERE repo = ? ORDER BY tag'),
      getManifest: db.prepare<[string], { media_type: string; size: number }>('SELECT media_type, size FROM manifests WHERE digest = ?'),
      putManifest: db.prepare<[string, string, number, number, number]>(
        'INSERT INTO manifests (digest, media_type, size, created_at, accessed_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET accessed_at = MAX(accessed_at, excluded.accessed_at)',
      ),
      manifestRead: db.prepare<[number, string]>('UPDATE manifests SET accessed_at = MAX(accessed_at, ?) WHERE digest = ?'),
      blobRead: db.prepare<[number, string]>('UPDATE blobs SET accessed_at = MAX(accessed_at, ?) WHERE digest = ?'),
      manifestBlob: db.prepare<[string, string]>('INSERT OR IGNORE INTO manifest_blobs (manifest, blob) VALUES (?, ?)'),
      cacheBytes: db.prepare<[], number>('SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs) + (SELECT COALESCE(SUM(size), 0) FROM manifests)').pluck(),
      cacheObjects: db.prepare<[], { bc: number; bb: number; mc: number; mb: number }>(
        'SELECT (SELECT COUNT(*) FROM blobs) AS bc, (SELECT COALESCE(SUM(size), 0) FROM blobs) AS bb, (SELECT COUNT(*) FROM manifests) AS mc, (SELECT COALESCE(SUM(size), 0) FROM manifests) AS mb',
      ),
      invManifests: db.prepare<[string, number], { digest: string; size: number; created_at: number; accessed_at: number }>('SELECT digest, size, created_at, accessed_at FROM manifests WHERE digest > ? ORDER BY digest LIMIT ?'),
      invBlobs: db.prepare<[string, number], { digest: string; size: number; created_at: number; accessed_at: number }>('SELECT digest, size, created_at, accessed_at FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?'),
      invReferencedBlobs: db.prepare<[string, number], { digest: string; size: number; created_at: number; accessed_at: number }>(
        // From the references (their blob index, in digest order): a cache of many unreferenced
        // blobs is not scanned (EXISTS over every blob row held the event loop 400 ms at 100k).
        'SELECT b.digest AS digest, b.size AS size, b.created_at AS created_at, b.accessed_at AS accessed_at FROM (SELECT DISTINCT blob FROM manifest_blobs WHERE blob > ? ORDER BY blob LIMIT ?) r JOIN blobs b ON b.digest = r.blob ORDER BY b.digest',
      ),
      // A seek into blobs_by_access and a walk along it (the row value is the index's key).
      orphanPage: db.prepare<[number, string, number], { digest: string; size: number; created_at: number; accessed_at: number }>(
        'SELECT digest, size, created_at, accessed_at FROM blobs b WHERE (accessed_at, digest) > (?, ?) AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE blob = b.digest) ORDER BY accessed_at, digest LIMIT ?',
      ),
      // Keyset pages over each primary key, so the inventory is many short statements.
      invManifestBlobs: db.prepare<[string, string, number], { a: string; b: string }>('SELECT manifest AS a, blob AS b FROM manifest_blobs WHERE (manifest, blob) > (?, ?) ORDER BY manifest, blob LIMIT ?'),
      invChildren: db.prepare<[string, string, number], { a: string; b: string }>('SELECT parent AS a, child AS b FROM manifest_children WHERE (parent, child) > (?, ?) ORDER BY parent, child LIMIT ?'),
      invTags: db.prepare<[string, string, number], { repo: string; tag: string; digest: string }>('SELECT repo, tag, digest FROM tags WHERE (repo, tag) > (?, ?) ORDER BY repo, tag LIMIT ?'),
      invLocal: db.prepare<[], string>("SELECT DISTINCT digest FROM repo_content WHERE repo >= '_local/' AND repo < '_local0'").pluck(),
      manifestUsed: db.prepare<[string], { accessed_at: number }>('SELECT accessed_at FROM manifests WHERE digest = ?'),
      hasOtherParent: db.prepare<[string], { parent: string }>('SELECT parent FROM manifest_children WHERE child = ?'),
      removeBlobIfFree: db.prepare<[string, number, string]>('DELETE FROM blobs WHERE digest = ? AND accessed_at < ? AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE blob = ?)'),
      delTagsOf: db.prepare<[string]>('DELETE FROM tags WHERE digest = ?'),
      delLinksOf: db.prepare<[string]>('DELETE FROM repo_content WHERE digest = ?'),
      linksOf: db.prepare<[string], string>('SELECT repo FROM repo_content WHERE digest = ?').pluck(),
      delChildrenOf: db.prepare<[string]>('DELETE FROM manifest_children WHERE parent = ?'),
      delBlobRefsOf: db.prepare<[string]>('DELETE FROM manifest_blobs WHERE manifest = ?'),
      delProvenanceOf: db.prepare<[string]>('DELETE FROM provenance WHERE digest = ?'),
      pins: db.prepare<[], { repo: string; reference: string; source: string; until: number | null }>('SELECT repo, reference, source, until FROM pins ORDER BY repo, reference'),
      pin: db.prepare<[string, string, string, number | null]>('INSERT OR REPLACE INTO pins (repo, reference, source, until) VALUES (?, ?, ?, ?)'),
      unpin: db.prepare<[string, string]>('DELETE FROM pins WHERE repo = ? AND reference = ?'),
      pinOf: db.prepare<[string, string], { source: string }>('SELECT source FROM pins WHERE repo = ? AND reference = ?'),
      expirePins: db.prepare<[number]>('DELETE FROM pins WHERE until IS NOT NULL AND until < ?'),
      clearConfigPins: db.prepare("DELETE FROM pins WHERE source = 'config'"),
      getBlob: db.prepare<[string], { size: number }>('SELECT size FROM blobs WHERE digest = ?'),
      putBlob: db.prepare<[string, number, number, number]>(
        'INSERT INTO blobs (digest, size, created_at, accessed_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET accessed_at = MAX(accessed_at, excluded.accessed_at)',
      ),
      link: db.prepare<[string, string]>('INSERT OR IGNORE INTO repo_content (repo, digest) VALUES (?, ?)'),
      hasLink: db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM repo_content WHERE repo = ? AND digest = ?'),
      forgetBlob: db.prepare<[string]>('DELETE FROM blobs WHERE digest = ?'),
      forgetManifest: db.prepare<[string]>('DELETE FROM manifests WHERE digest = ?'),
      blobDigestPage: db.prepare<[string, number], string>('SELECT digest FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?').pluck(),
      allManifestDigests: db.prepare<[], { digest: string }>('SELECT digest FROM manifests'),
      deleteTag: db.prepare<[string, string]>('DELETE FROM tags WHERE repo = ? AND tag = ?'),
      deleteTagsFor: db.prepare<[string, string]>('DELETE FROM tags WHERE repo = ? AND digest = ?'),
      tagsFor: db.prepare<[string, string], { tag: string }>('SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag'),
      unlink: db.prepare<[string, string]>('DELETE FROM repo_content WHERE repo = ? AND digest = ?'),
      metaGet: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
      metaPut: db.prepare<[string, string]>('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
      metaDelete: db.prepare<[string]>('DELETE FROM meta WHERE key = ?'),
      processes: db.prepare<[], { key: string }>("SELECT key FROM meta WHERE key LIKE 'process:%'"),
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
      putUpload: db.prepare<[string, string, number, number]>('INSERT INTO uploads (id, repo, created_at, updated_at) VALUES (?, ?, ?, ?)'),
      getUpload: db.prepare<[string], { repo: string; created_at: number; updated_at: number }>('SELECT repo, created_at, updated_at FROM uploads WHERE id = ?'),
      touchUpload: db.prepare<[number, string]>('UPDATE uploads SET updated_at = ? WHERE id = ?'),
      deleteUpload: db.prepare<[string]>('DELETE FROM uploads WHERE id = ?'),
      idleUploads: db.prepare<[number], { id: string }>('SELECT id FROM uploads WHERE updated_at < ?'),
      provRecord: db.prepare<[string, string, string, string, string, number, string, string | null, string | null, number, number]>(
        `INSERT INTO provenance (repo, digest, registry, repository, media_type, size, source, source_url, upstream_digest, first_fetched, last_checked)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (repo, digest) DO UPDATE SET last_checked = excluded.last_checked,
           upstream_digest = COALESCE(excluded.upstream_digest, provenance.upstream_digest)`,
      ),
      provChecked: db.prepare<[number, string, string]>('UPDATE provenance SET last_checked = ? WHERE repo = ? AND digest = ?'),
      provServe: db.prepare<[number, number, number, string, string]>('UPDATE provenance SET hits = hits + ?, misses = misses + ?, last_served = MAX(COALESCE(last_served, 0), ?) WHERE repo = ? AND digest = ?'),
      provGet: db.prepare<[string, string], Row>('SELECT * FROM provenance WHERE repo = ? AND digest = ?'),
      child: db.prepare<[string, string, number, string | null, string | null]>('INSERT OR IGNORE INTO manifest_children (parent, child, position, media_type, platform) VALUES (?, ?, ?, ?, ?)'),
      children: db.prepare<[string], { child: string; media_type: string | null; platform: string | null }>('SELECT child, media_type, platform FROM manifest_children WHERE parent = ? ORDER BY position'),
      addCounter: db.prepare<[string, number]>('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value'),
      counters: db.prepare<[], { name: string; value: number }>('SELECT name, value FROM counters'),
      totals: db.prepare<[], { manifests: number; hits: number | null; misses: number | null }>('SELECT COUNT(*) AS manifests, SUM(hits) AS hits, SUM(misses) AS misses FROM provenance'),
      blobTotals: db.prepare<[], { blobs: number; bytes: number | null }>('SELECT COUNT(*) AS blobs, SUM(size) AS bytes FROM blobs'),
    };
  }

  getTag(repo: string, tag: string): TagRecord | undefined {
    const r = this.st.getTag.get(repo, tag);
    return r === undefined ? undefined : { digest: r.digest, fetchedAt: r.fetched_at, checkedAt: r.checked_at };
  }

  putTag(repo: string, tag: string, digest: string, now: number): void {
    this.db.transaction(() => {
      const before = this.st.getTag.get(repo, tag);
      // A pinned tag that moves: the digest it pointed at stays pinned for PIN_PREVIOUS_MS.
      if (before !== undefined && before.digest !== digest && this.st.pinOf.get(repo, tag) !== undefined) {
        this.st.pin.run(repo, before.digest, 'moved', now + PIN_PREVIOUS_MS);
      }
      this.st.putTag.run(repo, tag, digest, now, now);
    })();
  }

  touchTag(repo: string, tag: string, digest: string, now: number): void {
    this.db.transaction(() => {
      this.st.touchTag.run(now, repo, tag, digest);
      this.st.provChecked.run(now, repo, digest);
    })();
  }

  listTags(repo: string): string[] {
    return this.st.listTags.all(repo).map((r) => r.tag);
  }

  tagsFor(repo: string, digest: string): string[] {
    return this.st.tagsFor.all(repo, digest).map((r) => r.tag);
  }

  deleteTag(repo: string, tag: string): boolean {
    return this.st.deleteTag.run(repo, tag).changes > 0;
  }

  getManifest(digest: string): ManifestRecord | undefined {
    const r = this.st.getManifest.get(digest);
    return r === undefined ? undefined : { mediaType: r.media_type, size: r.size };
  }

  putManifest(m: ManifestEntry, now: number): void {
    const p = m.provenance;
    this.db.transaction(() => {
      this.st.putManifest.run(m.digest, p.mediaType, m.size, now, now);
      for (const b of m.blobs) this.st.manifestBlob.run(m.digest, b);
      this.st.link.run(m.repo, m.digest);
      for (const d of m.references) this.st.link.run(m.repo, d);
      this.st.provRecord.run(m.repo, m.digest, p.registry, p.repository, p.mediaType, p.size, p.source, p.sourceUrl ?? null, p.upstreamDigest ?? null, now, now);
      m.children.forEach((c, i) => this.st.child.run(m.digest, c.digest, i, c.mediaType ?? null, c.platform ?? null));
    })();
  }

  forgetManifest(digest: string): void {
    this.st.forgetManifest.run(digest);
  }

  manifestDigests(): string[] {
    return this.st.allManifestDigests.all().map((r) => r.digest);
  }

  children(digest: string): ChildManifest[] {
    return this.st.children.all(digest).map((c) => {
      const out: ChildManifest = { digest: c.child };
      if (c.media_type !== null) out.mediaType = c.media_type;
      if (c.platform !== null) out.platform = c.platform;
      return out;
    });
  }

  getBlobSize(digest: string): number | undefined {
    return this.st.getBlob.get(digest)?.size;
  }

  putBlob(repo: string, digest: string, size: number, now: number): void {
    this.db.transaction(() => {
      this.st.putBlob.run(digest, size, now, now);
      this.st.link.run(repo, digest);
    })();
  }

  /**
   * Writes the buffered reads in one transaction. Updates only: a row removed meanwhile (evicted,
   * deleted) must not come back for content that is gone.
   */
  flushReads(): void {
    if (this.reads.size === 0 && this.manifestReads.size === 0) return;
    const blobs = [...this.reads];
    const manifests = [...this.manifestReads];
    this.reads.clear();
    this.manifestReads.clear();
    this.db.transaction(() => {
      for (const [digest, a] of blobs) this.st.blobRead.run(a.at, digest);
      for (const [digest, a] of manifests) this.st.manifestRead.run(a.at, digest);
    })();
  }

  cacheBytes(): number {
    return this.st.cacheBytes.get() as number;
  }

  cacheObjects(): CacheObjects {
    const r = this.st.cacheObjects.get() as { bc: number; bb: number; mc: number; mb: number };
    return { blobs: { count: r.bc, bytes: r.bb }, manifests: { count: r.mc, bytes: r.mb } };
  }

  /** One page of manifests or blobs after `after` (keyset paging: each page is a short statement). */
  inventoryPage(kind: 'manifests' | 'blobs' | 'referencedBlobs', after: string, limit: number): CachedObject[] {
    const st = kind === 'manifests' ? this.st.invManifests : kind === 'blobs' ? this.st.invBlobs : this.st.invReferencedBlobs;
    return st.all(after, limit).map(cachedObject);
  }

  /** usedAt here is accessed_at, the index's order (never before created_at: see the constructor). */
  orphanPage(after: { usedAt: number; digest: string } | undefined, limit: number): CachedObject[] {
    return this.st.orphanPage.all(after?.usedAt ?? -Infinity, after?.digest ?? '', limit).map((r) => ({ digest: r.digest, size: r.size, createdAt: r.created_at, usedAt: r.accessed_at }));
  }

  /** A page of (manifest, blob) references or (parent, child) links after the pair given. */
  pairPage(kind: 'blobs' | 'children', after: [string, string], limit: number): Array<{ a: string; b: string }> {
    return (kind === 'blobs' ? this.st.invManifestBlobs : this.st.invChildren).all(after[0], after[1], limit);
  }

  tagPage(after: [string, string], limit: number): Array<{ repo: string; tag: string; digest: string }> {
    return this.st.invTags.all(after[0], after[1], limit);
  }

  inventoryLocal(): Set<string> {
    return new Set(this.st.invLocal.all() as string[]);
  }

  removeContent(manifests: readonly string[], blobs: readonly string[], usedBefore: number): RemovedContent {
    return this.db.transaction(() => {
      const going = new Set(manifests);
      const removedM: string[] = [];
      for (const d of manifests) {
        const row = this.st.manifestUsed.get(d);
        if (row === undefined) continue;
        if (row.accessed_at >= usedBefore) {
          going.delete(d);
          continue;
        }
        if (this.st.hasOtherParent.all(d).some((p) => !going.has(p.parent))) {
          going.delete(d);
          continue;
        }
        removedM.push(d);
      }
      const links: Array<{ repo: string; digest: string }> = [];
      const unlink = (d: string): void => {
        for (const repo of this.st.linksOf.all(d)) links.push({ repo, digest: d });
        this.st.delLinksOf.run(d);
      };
      for (const d of removedM) {
        this.st.delTagsOf.run(d);
        unlink(d);
        this.st.delChildrenOf.run(d);
        this.st.delBlobRefsOf.run(d);
        this.st.delProvenanceOf.run(d);
        this.st.forgetManifest.run(d);
      }
      const removedB: string[] = [];
      // In key order: neighbouring deletes touch the same b-tree pages (random order cost a third more).
      for (const d of [...blobs].sort()) {
        // One statement checks last use and references and deletes (60 µs a blob as four).
        if (this.st.removeBlobIfFree.run(d, usedBefore, d).changes === 0) continue;
        unlink(d);
        removedB.push(d);
      }
      return { manifests: removedM, blobs: removedB, links };
    })();
  }

  pins(): Pin[] {
    return this.st.pins.all().map((r) => ({ repo: r.repo, reference: r.reference, source: r.source as Pin['source'], ...(r.until === null ? {} : { until: r.until }) }));
  }

  pin(p: Pin): void {
    this.st.pin.run(p.repo, p.reference, p.source, p.until ?? null);
  }

  unpin(repo: string, reference: string): boolean {
    return this.st.unpin.run(repo, reference).changes > 0;
  }

  setConfigPins(pins: ReadonlyArray<{ repo: string; reference: string }>): void {
    this.db.transaction(() => {
      this.st.clearConfigPins.run();
      for (const p of pins) if (this.st.pinOf.get(p.repo, p.reference) === undefined) this.st.pin.run(p.repo, p.reference, 'config', null);
    })();
  }

  expirePins(now: number): void {
    this.st.expirePins.run(now);
  }

  blobRefsPending(): boolean {
    return this.st.metaGet.get('blob_refs_pending') !== undefined;
  }

  putBlobRefs(refs: ReadonlyMap<string, readonly string[]>, done: boolean): void {
    this.db.transaction(() => {
      for (const [m, blobs] of refs) for (const b of blobs) this.st.manifestBlob.run(m, b);
      if (done) this.st.metaDelete.run('blob_refs_pending');
    })();
  }

  adoptBlobs(found: ReadonlyArray<{ digest: string; size: number }>, now: number): void {
    if (found.length === 0) return;
    this.db.transaction(() => {
      for (const b of found) this.st.putBlob.run(b.digest, b.size, now, now);
    })();
  }

  forgetBlobs(digests: readonly string[]): void {
    if (digests.length === 0) return;
    this.db.transaction(() => {
      for (const d of digests) this.st.forgetBlob.run(d);
    })();
  }

  blobDigestPage(after: string, limit: number): string[] {
    return this.st.blobDigestPage.all(after, limit) as string[];
  }

  knows(digest: string): boolean {
    return this.st.getBlob.get(digest) !== undefined || this.st.getManifest.get(digest) !== undefined;
  }

  link(repo: string, digest: string): void {
    this.st.link.run(repo, digest);
  }

  hasLink(repo: string, digest: string): boolean {
    return this.st.hasLink.get(repo, digest) !== undefined;
  }

  unlink(repo: string, digest: string): string[] {
    return this.db.transaction(() => {
      const tags = this.tagsFor(repo, digest);
      this.st.deleteTagsFor.run(repo, digest);
      this.st.unlink.run(repo, digest);
      return tags;
    })();
  }

  getProvenance(repo: string, digest: string): ProvenanceRecord | undefined {
    const r = this.st.provGet.get(repo, digest);
    return r === undefined ? undefined : toRecord(r);
  }

  listProvenance(f: ProvenanceFilter): ProvenanceRecord[] {
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

  addCounts(serves: ReadonlyMap<string, ServeDelta>, counters: ReadonlyMap<string, number>): void {
    if (serves.size === 0 && counters.size === 0) return;
    this.db.transaction(() => {
      for (const [key, d] of serves) {
        const nl = key.indexOf('\n');
        this.st.provServe.run(d.hits, d.misses, d.lastServed, key.slice(0, nl), key.slice(nl + 1));
      }
      for (const [name, v] of counters) if (v !== 0) this.st.addCounter.run(name, v);
    })();
  }

  counters(): Record<string, number> {
    return Object.fromEntries(this.st.counters.all().map((r) => [r.name, r.value]));
  }

  totals(): MetaTotals {
    const t = this.st.totals.get();
    const b = this.st.blobTotals.get();
    return { manifests: t?.manifests ?? 0, hits: t?.hits ?? 0, misses: t?.misses ?? 0, blobs: b?.blobs ?? 0, blobBytes: b?.bytes ?? 0 };
  }

  putUpload(id: string, repo: string, now: number): void {
    this.st.putUpload.run(id, repo, now, now);
  }

  getUpload(id: string): UploadRecord | undefined {
    const r = this.st.getUpload.get(id);
    return r === undefined ? undefined : { repo: r.repo, createdAt: r.created_at, updatedAt: r.updated_at };
  }

  touchUpload(id: string, now: number): void {
    this.st.touchUpload.run(now, id);
  }

  deleteUpload(id: string): void {
    this.st.deleteUpload.run(id);
  }

  uploadsIdleSince(before: number): string[] {
    return this.st.idleUploads.all(before).map((r) => r.id);
  }

  metaGet(key: string): string | undefined {
    return this.st.metaGet.get(key)?.value;
  }

  metaPut(key: string, value: string): void {
    this.st.metaPut.run(key, value);
  }

  metaDelete(key: string): void {
    this.st.metaDelete.run(key);
  }

  openProcesses(): string[] {
    return this.st.processes.all().map((r) => r.key.slice('process:'.length));
  }

  dataVersion(): number {
    return this.st.dataVersion.get() ?? 0;
  }
}

/** Metadata on SQLite behind the async MetaStore contract. */
export class SqliteMetaStore implements MetaStore {
  /**
   * Opens (creating if needed) the database at `path`. Throws when the schema is newer than this
   * build. Blob read times are flushed every READ_FLUSH_MS and on close().
   */
  static open(path: string): SqliteMetaStore {
    return new SqliteMetaStore(new SqliteTables(path), undefined);
  }

  private readonly timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly t: SqliteTables,
    /** Set on the store handed to a transaction's fn: its calls run inside the transaction. */
    private readonly txOf: SqliteMetaStore | undefined,
  ) {
    if (txOf === undefined) {
      this.timer = setInterval(() => this.flushReadsQuietly(), READ_FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Settles when the transaction in progress (if any) ended; held by transaction(). */
  private gate: Promise<void> | undefined;

  /** Undefined when a call may run now; else wait for the open transaction. */
  private wait(): Promise<void> | undefined {
    return this.txOf === undefined ? this.gate : undefined;
  }

  private flushReadsQuietly(): void {
    if (this.gate !== undefined) return; // next round
    try {
      this.t.flushReads();
    } catch {
      // A busy or failing database: the read times are lost, never the content (they are advisory).
    }
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const w = this.wait();
    if (w !== undefined) await w;
    return this.t.getTag(repo, tag);
  }

  async putTag(repo: string, tag: string, digest: string, now: number): Promise<void> {
    await this.wait();
    this.t.putTag(repo, tag, digest, now);
  }

  async touchTag(repo: string, tag: string, digest: string, now: number): Promise<void> {
    await this.wait();
    this.t.touchTag(repo, tag, digest, now);
  }

  async listTags(repo: string): Promise<string[]> {
    await this.wait();
    return this.t.listTags(repo);
  }

  async tagsFor(repo: string, digest: string): Promise<string[]> {
    await this.wait();
    return this.t.tagsFor(repo, digest);
  }

  async deleteTag(repo: string, tag: string): Promise<boolean> {
    await this.wait();
    return this.t.deleteTag(repo, tag);
  }

  async getManifest(digest: string): Promise<ManifestRecord | undefined> {
    const w = this.wait();
    if (w !== undefined) await w;
    return this.t.getManifest(digest);
  }

  async putManifest(m: ManifestEntry, now: number): Promise<void> {
    await this.wait();
    this.t.putManifest(m, now);
  }

  async forgetManifest(digest: string): Promise<void> {
    await this.wait();
    this.t.forgetManifest(digest);
  }

  async *manifestDigests(): AsyncIterable<string> {
    await this.wait();
    yield* this.t.manifestDigests();
  }

  async children(digest: string): Promise<ChildManifest[]> {
    await this.wait();
    return this.t.children(digest);
  }

  async getBlobSize(digest: string): Promise<number | undefined> {
    await this.wait();
    return this.t.getBlobSize(digest);
  }

  async putBlob(repo: string, digest: string, size: number, now: number): Promise<void> {
    await this.wait();
    this.t.putBlob(repo, digest, size, now);
  }

  noteBlobRead(digest: string, size: number, now: number): void {
    // One record per digest until the next flush, updated in place: a hit allocates nothing that
    // lives (a fresh object per hit would wait up to 30 s and be promoted to the old generation).
    const seen = this.t.reads.get(digest);
    if (seen === undefined) this.t.reads.set(digest, { at: now, size });
    else seen.at = now;
  }

  noteManifestRead(digest: string, now: number): void {
    const seen = this.t.manifestReads.get(digest);
    if (seen === undefined) this.t.manifestReads.set(digest, { at: now });
    else seen.at = now;
  }

  async flushReads(): Promise<void> {
    await this.wait();
    this.t.flushReads();
  }

  async cacheBytes(): Promise<number> {
    await this.wait();
    return this.t.cacheBytes();
  }

  async cacheObjects(): Promise<CacheObjects> {
    await this.wait();
    return this.t.cacheObjects();
  }

  /**
   * Read a page at a time (INVENTORY_PAGE rows), yielding to the event loop between pages: 100k
   * blobs in one statement held the event loop for tens of milliseconds while requests waited.
   */
  async inventory(o?: { orphans?: boolean }): Promise<CacheInventory> {
    const manifests = new Map<string, CachedManifest>();
    for await (const rows of this.pages<CachedObject>((last) => this.t.inventoryPage('manifests', last?.digest ?? '', INVENTORY_PAGE))) {
      for (const m of rows) manifests.set(m.digest, { digest: m.digest, size: m.size, createdAt: m.createdAt, usedAt: m.usedAt, blobs: [], children: [] });
    }
    const blobs: CachedObject[] = [];
    for await (const rows of this.pages<CachedObject>((last) => this.t.inventoryPage(o?.orphans === false ? 'referencedBlobs' : 'blobs', last?.digest ?? '', INVENTORY_PAGE))) blobs.push(...rows);
    for (const kind of ['blobs', 'children'] as const) {
      for await (const rows of this.pages<{ a: string; b: string }>((last) => this.t.pairPage(kind, [last?.a ?? '', last?.b ?? ''], INVENTORY_PAGE))) {
        for (const r of rows) manifests.get(r.a)?.[kind].push(r.b);
      }
    }
    const tags: CacheInventory['tags'] = [];
    for await (const rows of this.pages<{ repo: string; tag: string; digest: string }>((last) => this.t.tagPage([last?.repo ?? '', last?.tag ?? ''], INVENTORY_PAGE))) tags.push(...rows);
    await this.wait();
    return { manifests: [...manifests.values()], blobs, tags, local: this.t.inventoryLocal(), pins: this.t.pins() };
  }

  /**
   * Keyset pages of INVENTORY_PAGE rows: `page(last)` reads the rows after the last one of the page
   * before (undefined: from the start); the event loop runs between pages, and a page is never read
   * inside another caller's open transaction.
   */
  private async *pages<R>(page: (last: R | undefined) => R[]): AsyncGenerator<R[]> {
    let last: R | undefined;
    for (;;) {
      await this.wait();
      const rows = page(last);
      yield rows;
      if (rows.length < INVENTORY_PAGE) return;
      last = rows[rows.length - 1];
      await new Promise((r) => setImmediate(r));
    }
  }

  async orphanBlobs(after: { usedAt: number; digest: string } | undefined, limit: number): Promise<CachedObject[]> {
    await this.wait();
    return this.t.orphanPage(after, Math.min(Math.max(limit, 1), INVENTORY_PAGE));
  }

  async removeContent(manifests: readonly string[], blobs: readonly string[], usedBefore: number): Promise<RemovedContent> {
    await this.wait();
    return this.t.removeContent(manifests, blobs, usedBefore);
  }

  async pins(): Promise<Pin[]> {
    await this.wait();
    this.t.expirePins(Date.now());
    return this.t.pins();
  }

  async pin(p: Pin): Promise<void> {
    await this.wait();
    this.t.pin(p);
  }

  async unpin(repo: string, reference: string): Promise<boolean> {
    await this.wait();
    return this.t.unpin(repo, reference);
  }

  async setConfigPins(pins: ReadonlyArray<{ repo: string; reference: string }>): Promise<void> {
    await this.wait();
    this.t.setConfigPins(pins);
  }

  async blobRefsPending(): Promise<boolean> {
    await this.wait();
    return this.t.blobRefsPending();
  }

  async putBlobRefs(refs: ReadonlyMap<string, readonly string[]>, done: boolean): Promise<void> {
    await this.wait();
    this.t.putBlobRefs(refs, done);
  }

  async adoptBlobs(found: ReadonlyArray<{ digest: string; size: number }>, now: number): Promise<void> {
    await this.wait();
    this.t.adoptBlobs(found, now);
  }

  async forgetBlobs(digests: readonly string[]): Promise<void> {
    await this.wait();
    this.t.forgetBlobs(digests);
  }

  /** A page of INVENTORY_PAGE digests at a time, yielding to the event loop between pages (100k in one statement held it 170 ms). */
  async *blobDigests(): AsyncIterable<string> {
    for await (const rows of this.pages<string>((last) => this.t.blobDigestPage(last ?? '', INVENTORY_PAGE))) yield* rows;
  }

  async knows(digest: string): Promise<boolean> {
    await this.wait();
    return this.t.knows(digest);
  }

  async link(repo: string, digest: string): Promise<void> {
    await this.wait();
    this.t.link(repo, digest);
  }

  async hasLink(repo: string, digest: string): Promise<boolean> {
    const w = this.wait();
    if (w !== undefined) await w;
    return this.t.hasLink(repo, digest);
  }

  async unlink(repo: string, digest: string): Promise<string[]> {
    await this.wait();
    return this.t.unlink(repo, digest);
  }

  async getProvenance(repo: string, digest: string): Promise<ProvenanceRecord | undefined> {
    await this.wait();
    return this.t.getProvenance(repo, digest);
  }

  async listProvenance(f: ProvenanceFilter): Promise<ProvenanceRecord[]> {
    await this.wait();
    return this.t.listProvenance(f);
  }

  async addCounts(serves: ReadonlyMap<string, ServeDelta>, counters: ReadonlyMap<string, number>): Promise<void> {
    await this.wait();
    this.t.addCounts(serves, counters);
  }

  async counters(): Promise<Record<string, number>> {
    await this.wait();
    return this.t.counters();
  }

  async totals(): Promise<MetaTotals> {
    await this.wait();
    return this.t.totals();
  }

  async putUpload(id: string, repo: string, now: number): Promise<void> {
    await this.wait();
    this.t.putUpload(id, repo, now);
  }

  async getUpload(id: string): Promise<UploadRecord | undefined> {
    await this.wait();
    return this.t.getUpload(id);
  }

  async touchUpload(id: string, now: number): Promise<void> {
    await this.wait();
    this.t.touchUpload(id, now);
  }

  async deleteUpload(id: string): Promise<void> {
    await this.wait();
    this.t.deleteUpload(id);
  }

  async uploadsIdleSince(before: number): Promise<string[]> {
    await this.wait();
    return this.t.uploadsIdleSince(before);
  }

  async processOpened(owner: string, now: number): Promise<void> {
    await this.wait();
    this.t.metaPut(`process:${owner}`, String(now));
  }

  async processClosed(owner: string): Promise<void> {
    await this.wait();
    this.t.metaDelete(`process:${owner}`);
  }

  async openProcesses(): Promise<string[]> {
    await this.wait();
    return this.t.openProcesses();
  }

  async filesReconciled(): Promise<boolean> {
    await this.wait();
    return this.t.metaGet('files_reconciled') !== undefined;
  }

  async setFilesReconciled(done: boolean): Promise<void> {
    await this.wait();
    if (done) this.t.metaPut('files_reconciled', '1');
    else this.t.metaDelete('files_reconciled');
  }

  /** SQLite's data_version: changes when another connection committed (this one's writes do not). */
  async generation(): Promise<string> {
    return String(this.t.dataVersion());
  }

  watchCommits(onCommit: () => void, onLost: (err: Error) => void): (() => void) | undefined {
    const file = this.t.db.name;
    if (this.t.db.memory || file === '') return undefined;
    const base = basename(file);
    let watcher: FSWatcher;
    try {
      // The folder, not the files: the WAL is created and removed as connections come and go.
      watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name === null || name === base || name === `${base}-wal`) onCommit();
      });
    } catch {
      return undefined; // no inotify here (or no watches left): generation() polling only
    }
    watcher.on('error', (err) => {
      watcher.close();
      onLost(err);
    });
    return () => watcher.close();
  }

  async transaction<T>(fn: (tx: MetaStore) => Promise<T>): Promise<T> {
    if (this.txOf !== undefined) return fn(this); // nested: part of the open transaction
    while (this.gate !== undefined) await this.gate;
    let open: () => void = () => undefined;
    this.gate = new Promise<void>((r) => {
      open = r;
    });
    const tx = new SqliteMetaStore(this.t, this);
    try {
      this.t.db.exec('BEGIN IMMEDIATE');
      try {
        const result = await fn(tx);
        this.t.db.exec('COMMIT');
        return result;
      } catch (e) {
        if (this.t.db.inTransaction) this.t.db.exec('ROLLBACK');
        throw e;
      }
    } finally {
      this.gate = undefined;
      open();
    }
  }

  async close(): Promise<void> {
    if (this.txOf !== undefined) return;
    clearInterval(this.timer);
    while (this.gate !== undefined) await this.gate;
    this.flushReadsQuietly();
    this.t.db.close();
  }
}
