/**
 * SqliteMetaStore: metadata in one SQLite database (better-sqlite3, WAL) — DESIGN §5.
 * Pragmas at open, statements prepared once, schema version explicit. Hot-path reads are
 * single prepared-statement lookups; the mirror keeps an LRU in front of them.
 */
import Database from 'better-sqlite3';
import type { Database as Db, Statement } from 'better-sqlite3';

/** 1: blobs, manifests, tags, repo links. 2: provenance records, index children, counters. */
export const SCHEMA_VERSION = 2;

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
  created_at  INTEGER NOT NULL
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
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
`;

export interface TagRecord {
  digest: string;
  fetchedAt: number;
  checkedAt: number;
}

export interface ManifestRecord {
  mediaType: string;
  size: number;
}

/** Metadata store on SQLite. All methods are synchronous (better-sqlite3) and fast. */
export class SqliteMetaStore {
  private readonly db: Db;
  private readonly st: {
    getTag: Statement<[string, string], { digest: string; fetched_at: number; checked_at: number }>;
    putTag: Statement<[string, string, string, number, number]>;
    touchTag: Statement<[number, string, string, string]>;
    listTags: Statement<[string], { tag: string }>;
    getManifest: Statement<[string], { media_type: string; size: number }>;
    putManifest: Statement<[string, string, number, number]>;
    getBlob: Statement<[string], { size: number }>;
    putBlob: Statement<[string, number, number, number]>;
    link: Statement<[string, string]>;
    hasLink: Statement<[string, string], { one: number }>;
    forgetBlob: Statement<[string]>;
    forgetManifest: Statement<[string]>;
    allBlobDigests: Statement<[], { digest: string }>;
    allManifestDigests: Statement<[], { digest: string }>;
    deleteTag: Statement<[string, string]>;
    deleteTagsFor: Statement<[string, string]>;
    tagsFor: Statement<[string, string], { tag: string }>;
    unlink: Statement<[string, string]>;
  };

  /** Opens (creating if needed) the database at `path`. Throws when the schema is newer than this build. */
  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('temp_store = MEMORY');
    this.db.exec(SCHEMA);
    const row = this.db.prepare<[], { value: string }>("SELECT value FROM meta WHERE key = 'schema_version'").get();
    if (row === undefined) {
      this.db.prepare("INSERT INTO meta (key, value) VALUES ('schema_version', ?)").run(String(SCHEMA_VERSION));
    } else if (Number(row.value) > SCHEMA_VERSION) {
      throw new Error(`metadata schema version ${row.value} is newer than this regmirror understands (${SCHEMA_VERSION})`);
    } else if (Number(row.value) < SCHEMA_VERSION) {
      // Every schema step so far only adds tables (CREATE ... IF NOT EXISTS above).
      this.db.prepare("UPDATE meta SET value = ? WHERE key = 'schema_version'").run(String(SCHEMA_VERSION));
    }
    const db = this.db;
    this.st = {
      getTag: db.prepare('SELECT digest, fetched_at, checked_at FROM tags WHERE repo = ? AND tag = ?'),
      putTag: db.prepare(
        `INSERT INTO tags (repo, tag, digest, fetched_at, checked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, fetched_at = excluded.fetched_at, checked_at = excluded.checked_at`,
      ),
      touchTag: db.prepare('UPDATE tags SET checked_at = ? WHERE repo = ? AND tag = ? AND digest = ?'),
      listTags: db.prepare('SELECT tag FROM tags WHERE repo = ? ORDER BY tag'),
      getManifest: db.prepare('SELECT media_type, size FROM manifests WHERE digest = ?'),
      putManifest: db.prepare('INSERT OR IGNORE INTO manifests (digest, media_type, size, created_at) VALUES (?, ?, ?, ?)'),
      getBlob: db.prepare('SELECT size FROM blobs WHERE digest = ?'),
      putBlob: db.prepare(
        'INSERT INTO blobs (digest, size, created_at, accessed_at) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET accessed_at = excluded.accessed_at',
      ),
      link: db.prepare('INSERT OR IGNORE INTO repo_content (repo, digest) VALUES (?, ?)'),
      hasLink: db.prepare('SELECT 1 AS one FROM repo_content WHERE repo = ? AND digest = ?'),
      forgetBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      forgetManifest: db.prepare('DELETE FROM manifests WHERE digest = ?'),
      allBlobDigests: db.prepare('SELECT digest FROM blobs'),
      allManifestDigests: db.prepare('SELECT digest FROM manifests'),
      deleteTag: db.prepare('DELETE FROM tags WHERE repo = ? AND tag = ?'),
      deleteTagsFor: db.prepare('DELETE FROM tags WHERE repo = ? AND digest = ?'),
      tagsFor: db.prepare('SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag'),
      unlink: db.prepare('DELETE FROM repo_content WHERE repo = ? AND digest = ?'),
    };
  }

  getTag(repo: string, tag: string): TagRecord | undefined {
    const r = this.st.getTag.get(repo, tag);
    return r === undefined ? undefined : { digest: r.digest, fetchedAt: r.fetched_at, checkedAt: r.checked_at };
  }

  /** Records tag → digest, fetched and checked now. */
  putTag(repo: string, tag: string, digest: string, now: number): void {
    this.st.putTag.run(repo, tag, digest, now, now);
  }

  /** Refreshes a tag's check time when it still points at `digest`. */
  touchTag(repo: string, tag: string, digest: string, now: number): void {
    this.st.touchTag.run(now, repo, tag, digest);
  }

  listTags(repo: string): string[] {
    return this.st.listTags.all(repo).map((r) => r.tag);
  }

  getManifest(digest: string): ManifestRecord | undefined {
    const r = this.st.getManifest.get(digest);
    return r === undefined ? undefined : { mediaType: r.media_type, size: r.size };
  }

  /** Records a stored manifest and links it and everything it references to `repo`, in one transaction. */
  putManifest(repo: string, digest: string, mediaType: string, size: number, referenced: readonly string[], now: number): void {
    this.db.transaction(() => {
      this.st.putManifest.run(digest, mediaType, size, now);
      this.st.link.run(repo, digest);
      for (const d of referenced) this.st.link.run(repo, d);
    })();
  }

  getBlobSize(digest: string): number | undefined {
    return this.st.getBlob.get(digest)?.size;
  }

  /** Records a committed blob and links it to `repo`. */
  putBlob(repo: string, digest: string, size: number, now: number): void {
    this.db.transaction(() => {
      this.st.putBlob.run(digest, size, now, now);
      this.st.link.run(repo, digest);
    })();
  }

  /**
   * Writes a batch of access times of blobs read from their files (flushed off the hot path). A
   * blob whose row is missing gets it back here (a process killed between the file's rename and
   * its row: issue 14, defect 5), since its file was verified before it was put in place.
   */
  touchBlobs(accessed: ReadonlyMap<string, { at: number; size: number }>): void {
    if (accessed.size === 0) return;
    this.db.transaction(() => {
      for (const [digest, a] of accessed) this.st.putBlob.run(digest, a.size, a.at, a.at);
    })();
  }

  /** Records blobs found on disk without a row (start-up reconciliation), in one transaction. */
  adoptBlobs(found: ReadonlyArray<{ digest: string; size: number }>, now: number): void {
    if (found.length === 0) return;
    this.db.transaction(() => {
      for (const b of found) this.st.putBlob.run(b.digest, b.size, now, now);
    })();
  }

  /**
   * Notes that the process with owner token `owner` (store/owner.ts) has the cache open; a clean
   * close removes the note (processClosed). A note whose process is gone means that process died
   * with work in flight: start-up reconciliation then scans the blob files (serve.ts).
   */
  processOpened(owner: string, now: number): void {
    this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(`process:${owner}`, String(now));
  }

  processClosed(owner: string): void {
    this.db.prepare('DELETE FROM meta WHERE key = ?').run(`process:${owner}`);
  }

  /** Owner tokens of the processes that opened the cache and did not close it (alive, or killed). */
  openProcesses(): string[] {
    return this.db.prepare<[], { key: string }>("SELECT key FROM meta WHERE key LIKE 'process:%'").all().map((r) => r.key.slice('process:'.length));
  }

  /** Whether the blob files were ever reconciled with the rows (a cache from before that never was). */
  get filesReconciled(): boolean {
    return this.db.prepare("SELECT 1 FROM meta WHERE key = 'files_reconciled'").get() !== undefined;
  }

  set filesReconciled(done: boolean) {
    if (done) this.db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('files_reconciled', '1')").run();
    else this.db.prepare("DELETE FROM meta WHERE key = 'files_reconciled'").run();
  }

  /** True when `digest` has a blob or a manifest row. */
  knows(digest: string): boolean {
    return this.st.getBlob.get(digest) !== undefined || this.st.getManifest.get(digest) !== undefined;
  }

  link(repo: string, digest: string): void {
    this.st.link.run(repo, digest);
  }

  /** True when `repo` is known to contain `digest` (fetched through it, or referenced by its manifests). */
  hasLink(repo: string, digest: string): boolean {
    return this.st.hasLink.get(repo, digest) !== undefined;
  }

  /** The tags of `repo` that point at `digest`. */
  tagsFor(repo: string, digest: string): string[] {
    return this.st.tagsFor.all(repo, digest).map((r) => r.tag);
  }

  /** Deletes a tag; true when it existed. */
  deleteTag(repo: string, tag: string): boolean {
    return this.st.deleteTag.run(repo, tag).changes > 0;
  }

  /**
   * Removes `digest` from `repo` (a manifest or blob DELETE): the link and, for a manifest, every
   * tag of the repository pointing at it. Returns the tags removed. The content stays on disk for
   * other repositories (garbage collection is separate).
   */
  unlink(repo: string, digest: string): string[] {
    return this.db.transaction(() => {
      const tags = this.tagsFor(repo, digest);
      this.st.deleteTagsFor.run(repo, digest);
      this.st.unlink.run(repo, digest);
      return tags;
    })();
  }

  /** Forgets many blob rows in one transaction. */
  forgetBlobs(digests: readonly string[]): void {
    if (digests.length === 0) return;
    this.db.transaction(() => {
      for (const d of digests) this.st.forgetBlob.run(d);
    })();
  }

  forgetManifest(digest: string): void {
    this.st.forgetManifest.run(digest);
  }

  /** All blob digests (for the start-up sweep of rows whose files are gone). */
  *blobDigests(): IterableIterator<string> {
    for (const r of this.st.allBlobDigests.iterate()) yield r.digest;
  }

  /** All manifest digests (start-up reconciliation). */
  *manifestDigests(): IterableIterator<string> {
    for (const r of this.st.allManifestDigests.iterate()) yield r.digest;
  }

  /** The open database, for stores that share it (provenance). */
  get database(): Db {
    return this.db;
  }

  close(): void {
    this.db.close();
  }
}
