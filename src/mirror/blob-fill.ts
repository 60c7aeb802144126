/**
 * BlobFill: one upstream blob download being written to the cache, followed by any number of
 * readers. The writer keeps the newest few MiB in its staging blocks: a reader keeping up with
 * the download copies from there, and one that falls behind reads older bytes back through the
 * writer (BlobWriter.readAt). The download is paced to its fastest reader (at most
 * PACE_AHEAD ahead), so that reader stays inside the memory window; a reader that stalls ends the
 * pacing, so a slow client never holds the fill back for long, and a disconnect never stops it.
 *
 * Integrity rule: a reader never emits its last byte until the fill's size and digest are
 * verified. A cut or wrong upstream body therefore always reaches the client as a failed
 * transfer, never as a complete-looking one.
 */
import { EventEmitter } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { ChunkSink, type BlobWriter } from '../store/index.ts';

const READ_CHUNK = 256 * 1024;
/**
 * How far the download may run ahead of its fastest reader: well inside the writer's memory
 * window (3-4 MiB), so a reader that keeps up never reads the file. A download racing ahead of
 * its client made the client read every byte back from the file (issue 7: a third of the
 * mirror's CPU in a cold pull).
 */
const PACE_AHEAD = 2 * 1024 * 1024;
/** A lead reader that takes nothing for this long stops pacing the download, which then runs free. */
const PACE_STALL_MS = 500;

/** Where a reader following the fill is: the bytes before `pos` were taken by its client. */
interface ReaderPos {
  pos: number;
}

/** filling → verified (digest checked: readers may finish) → committed (durable, in place); or failed. */
export type FillState = 'filling' | 'verified' | 'committed' | 'failed';

export class BlobFill extends EventEmitter {
  state: FillState = 'filling';
  error: Error | undefined;
  private refs = 1;
  /** Readers following the fill, for pacing. */
  private readonly readers = new Set<ReaderPos>();
  private pacing = true;
  /** Wakes the filler waiting in paced(). */
  private wakeFiller: (() => void) | undefined;

  constructor(
    readonly writer: BlobWriter,
    /** Declared size (upstream Content-Length), if known. */
    readonly size: number | undefined,
  ) {
    super();
    this.setMaxListeners(0);
    writer.onProgress = () => this.emit('change');
  }

  get written(): number {
    return this.writer.bytesWritten;
  }

  /** Readers following the fill now (the metrics' waiting readers). */
  get readerCount(): number {
    return this.readers.size;
  }

  /** Called by the filler after each chunk it gave the writer. */
  progress(): void {
    this.emit('change');
  }

  /**
   * The filler's loop: writes the upstream body to the writer, paced to the readers, then checks
   * size and digest and lets the readers finish (verified). Throws on a read, write or verify
   * failure; the caller then aborts the writer and fails the fill. Persisting is the caller's.
   */
  async download(body: AsyncIterable<Uint8Array>): Promise<void> {
    for await (const chunk of body) {
      await this.writer.write(chunk);
      this.progress();
      const paced = this.paced();
      if (paced !== undefined) await paced;
    }
    await this.writer.verify();
    this.verified();
  }

  /**
   * Undefined when the filler may take its next chunk at once; else a promise that settles when it
   * may: once the fastest reader is within PACE_AHEAD again. A lead reader that takes nothing for
   * PACE_STALL_MS (a stalled or slow client) ends pacing for the rest of the fill.
   */
  paced(): Promise<void> | undefined {
    if (!this.pacing || !this.behind()) return undefined;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.pacing = false;
        this.wakeFiller = undefined;
        resolve();
      }, PACE_STALL_MS);
      this.wakeFiller = () => {
        if (this.behind()) return;
        clearTimeout(timer);
        this.wakeFiller = undefined;
        resolve();
      };
    });
  }

  /** Whether readers follow and the fastest is more than PACE_AHEAD behind the download. */
  private behind(): boolean {
    if (this.readers.size === 0) return false;
    let lead = 0;
    for (const r of this.readers) if (r.pos > lead) lead = r.pos;
    return this.written - lead > PACE_AHEAD;
  }

  private readerMoved(): void {
    this.wakeFiller?.();
  }

  private readerLeft(r: ReaderPos): void {
    this.readers.delete(r);
    this.wakeFiller?.();
  }

  private stopPacing(): void {
    this.pacing = false;
    this.wakeFiller?.();
  }

  /**
   * Puts up to `len` bytes at `pos` into `buf`: from the writer's memory, else from the file.
   * Returns 0 when they are in neither yet (wait for the next change). `len` > 0, and `pos + len`
   * within what the writer accepted.
   */
  private readAt(pos: number, buf: Buffer, len: number): Promise<number> {
    return this.writer.readAt(pos, buf, 0, len);
  }

  /** Called by the filler once size and digest are checked: readers may now send their last byte. */
  verified(): void {
    this.state = 'verified';
    this.emit('change');
  }

  /** Called by the filler once the blob is verified and in place. Releases the filler's reference. */
  commit(): void {
    this.state = 'committed';
    this.stopPacing();
    this.emit('change');
    this.release();
  }

  /** Called by the filler when the download or verification failed. Releases the filler's reference. */
  fail(err: Error): void {
    this.state = 'failed';
    this.stopPacing();
    this.error = err;
    this.emit('change');
    this.release();
  }

  /** Settles when the fill is committed; rejects with the fill's error. */
  done(): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.state === 'committed') resolve();
        else if (this.state === 'failed') reject(this.error);
        else return false;
        return true;
      };
      if (check()) return;
      const on = (): void => {
        if (check()) this.off('change', on);
      };
      this.on('change', on);
    });
  }

  /** Takes a reference on the writer (readers follow it); only valid while the fill is filling. */
  acquire(): void {
    if (this.refs === 0) throw new Error('BlobFill handle already closed');
    this.refs++;
  }

  /** Drops a reference; the writer closes when the last one goes. */
  release(): void {
    this.refs--;
    if (this.refs === 0) void this.writer.close();
  }

  /**
   * How far a reader at `pos` (range end `end`, undefined: the blob's end) may read now: the bytes
   * received, less the last byte until the content is verified; `done` once it has them all.
   */
  private readLimit(pos: number, end: number | undefined): number | 'done' {
    const target = end ?? this.size;
    const committed = this.state === 'verified' || this.state === 'committed';
    if (committed && pos >= (target ?? this.written)) return 'done';
    return target === undefined ? this.written : Math.min(this.written, committed ? target : target - 1);
  }

  /**
   * Writes bytes [start, end) of the blob (end undefined: to the end) to `dest` following the fill,
   * then ends it, through two reused buffers (fresh chunks per read piled up as garbage under 20
   * concurrent pulls). Holds back the last byte until the content is verified, like createReader.
   * Consumes one reference the caller took with acquire(). Rejects with the fill's error on failure.
   * `ready` is called once, just before the first byte (or the end, for an empty range) goes to
   * `dest`: a fill that fails before then has sent nothing, so its caller can still answer an error.
   */
  async sendTo(dest: Writable, start = 0, end?: number, ready: () => void = () => undefined): Promise<void> {
    const sink = new ChunkSink(dest);
    const me: ReaderPos = { pos: start };
    this.readers.add(me);
    const nextChange = (done: () => void): void => {
      this.once('change', () => done());
    };
    try {
      const size = Math.min(READ_CHUNK, Math.max(1, (end ?? this.size ?? READ_CHUNK) - start));
      const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)];
      let pos = start;
      for (let i = 0; ; ) {
        if (this.state === 'failed') throw this.error ?? new Error('blob fill failed');
        const limit = this.readLimit(pos, end);
        if (limit === 'done') break;
        const buf = buffers[i % 2] as Buffer; // its write was taken before the last sink.write returned
        const n = pos < limit ? await this.readAt(pos, buf, Math.min(size, limit - pos)) : 0;
        if (n === 0) {
          await sink.until(nextChange);
          continue;
        }
        i++;
        me.pos = pos; // the chunk before this one was taken (sink.write below waits for that)
        if (pos === start) ready();
        pos += n;
        await sink.write(n === buf.length ? buf : buf.subarray(0, n));
        this.readerMoved();
      }
      if (pos === start) ready();
      await sink.end();
    } finally {
      this.readerLeft(me);
      sink.dispose();
      this.release();
    }
  }

  /**
   * A readable of bytes [start, end) of the blob (end undefined: to the end), following the fill.
   * Consumes one reference the caller took with acquire(). Errors with the fill's error on failure.
   */
  createReader(start = 0, end?: number): Readable {
    let pos = start;
    let waiting = false;
    let released = false;
    const me: ReaderPos = { pos: start };
    this.readers.add(me);
    const release = (): void => {
      if (!released) {
        released = true;
        this.readerLeft(me);
        this.release();
      }
    };
    const fill = this;
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
        me.pos = pos - stream.readableLength; // what the consumer has taken
        fill.readerMoved();
        void pump();
      },
      destroy(err, cb) {
        fill.off('change', onChange);
        release();
        cb(err);
      },
    });
    const onChange = (): void => {
      if (waiting) {
        waiting = false;
        fill.off('change', onChange);
        void pump();
      }
    };
    let busy = false;
    const pump = async (): Promise<void> => {
      if (busy || stream.destroyed) return;
      busy = true;
      try {
        for (;;) {
          if (fill.state === 'failed') {
            stream.destroy(fill.error ?? new Error('blob fill failed'));
            return;
          }
          const limit = fill.readLimit(pos, end);
          if (limit === 'done') {
            stream.push(null);
            release();
            return;
          }
          const len = pos < limit ? Math.min(READ_CHUNK, limit - pos) : 0;
          const buf = Buffer.allocUnsafe(Math.max(len, 1)); // pushed, so never reused
          const n = len > 0 ? await fill.readAt(pos, buf, len) : 0;
          if (stream.destroyed) return;
          if (n === 0) {
            if (!waiting) {
              waiting = true;
              fill.on('change', onChange);
            }
            return;
          }
          pos += n;
          if (!stream.push(n === buf.length ? buf : buf.subarray(0, n))) return;
        }
      } catch (e) {
        stream.destroy(e as Error);
      } finally {
        busy = false;
      }
    };
    return stream;
  }
}
