/**
 * BlobFill: one upstream blob download being written to the cache, followed by any number of
 * readers. The last few MiB written stay in memory (the upstream's own chunks, not copies): a
 * reader keeping up with the download is served from there, and one that falls behind tails the
 * temp file with positional reads on the writer's own file handle. So a slow client never slows
 * the fill, a disconnect never stops it, and the usual reader costs no disk read.
 *
 * Integrity rule: a reader never emits its last byte until the fill's size and digest are verified. A cut or wrong upstream body therefore always reaches the client as a failed transfer,
 * never as a complete-looking one.
 */
import { EventEmitter } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { ChunkSink, type BlobWriter } from '../store/index.ts';

const READ_CHUNK = 256 * 1024;
/** How many bytes of the most recent chunks a fill keeps for readers that keep up. */
const RECENT_BYTES = 4 * 1024 * 1024;

/** filling → verified (digest checked: readers may finish) → committed (durable, in place); or failed. */
export type FillState = 'filling' | 'verified' | 'committed' | 'failed';

export class BlobFill extends EventEmitter {
  state: FillState = 'filling';
  error: Error | undefined;
  private refs = 1;
  /** The most recently written chunks, oldest first, with their offsets in the blob. */
  private readonly recent: Array<{ pos: number; buf: Buffer }> = [];
  private recentBytes = 0;

  constructor(
    readonly writer: BlobWriter,
    /** Declared size (upstream Content-Length), if known. */
    readonly size: number | undefined,
  ) {
    super();
    this.setMaxListeners(0);
  }

  get written(): number {
    return this.writer.bytesWritten;
  }

  /**
   * Called by the filler after each chunk is on disk, with that chunk (which must not change
   * afterwards) when readers may be served it from memory.
   */
  progress(chunk?: Buffer): void {
    if (chunk !== undefined && chunk.byteLength > 0) {
      this.recent.push({ pos: this.written - chunk.byteLength, buf: chunk });
      this.recentBytes += chunk.byteLength;
      while (this.recentBytes > RECENT_BYTES && this.recent.length > 1) {
        this.recentBytes -= (this.recent.shift() as { buf: Buffer }).buf.byteLength;
      }
    }
    this.emit('change');
  }

  /** Bytes [pos, limit) or a prefix of them from the recent chunks; undefined when pos is older. */
  private fromMemory(pos: number, limit: number): Buffer | undefined {
    const recent = this.recent;
    const first = recent[0];
    if (first === undefined || pos < first.pos) return undefined;
    for (let i = recent.length - 1; i >= 0; i--) {
      const e = recent[i] as { pos: number; buf: Buffer };
      if (e.pos <= pos) {
        if (pos >= e.pos + e.buf.byteLength) return undefined;
        return e.buf.subarray(pos - e.pos, Math.min(e.buf.byteLength, limit - e.pos));
      }
    }
    return undefined;
  }

  private dropRecent(): void {
    this.recent.length = 0;
    this.recentBytes = 0;
  }

  /** Called by the filler once size and digest are checked: readers may now send their last byte. */
  verified(): void {
    this.state = 'verified';
    this.emit('change');
  }

  /** Called by the filler once the blob is verified and in place. Releases the filler's reference. */
  commit(): void {
    this.state = 'committed';
    this.dropRecent();
    this.emit('change');
    this.release();
  }

  /** Called by the filler when the download or verification failed. Releases the filler's reference. */
  fail(err: Error): void {
    this.state = 'failed';
    this.dropRecent();
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

  /** Takes a reference on the shared file handle; only valid while the fill is filling. */
  acquire(): void {
    if (this.refs === 0) throw new Error('BlobFill handle already closed');
    this.refs++;
  }

  /** Drops a reference; the handle closes when the last one goes. */
  release(): void {
    this.refs--;
    if (this.refs === 0) void this.writer.handle.close().catch(() => undefined);
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

  /** Settles at the next state or progress change. */
  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.once('change', resolve));
  }

  /**
   * Writes bytes [start, end) of the blob (end undefined: to the end) to `dest` following the fill,
   * then ends it: recent chunks straight from memory, older bytes read from the file into two
   * reused buffers (a read stream's fresh chunk per read piled up as garbage under 20 concurrent
   * pulls). Holds back the last byte until the content is verified, like createReader. Consumes
   * one reference the caller took with acquire(). Rejects with the fill's error on failure.
   */
  async sendTo(dest: Writable, start = 0, end?: number): Promise<void> {
    const sink = new ChunkSink(dest);
    try {
      let buffers: Buffer[] | undefined;
      let reads = 0;
      let pos = start;
      for (;;) {
        if (this.state === 'failed') throw this.error ?? new Error('blob fill failed');
        const limit = this.readLimit(pos, end);
        if (limit === 'done') break;
        if (pos >= limit) {
          await Promise.race([this.nextChange(), sink.closed]);
          continue;
        }
        let chunk = this.fromMemory(pos, limit);
        if (chunk === undefined) {
          buffers ??= [Buffer.allocUnsafeSlow(READ_CHUNK), Buffer.allocUnsafeSlow(READ_CHUNK)];
          const buf = buffers[reads++ % 2] as Buffer; // taken by dest before the last sink.write returned
          const { bytesRead } = await this.writer.handle.read(buf, 0, Math.min(READ_CHUNK, limit - pos), pos);
          if (bytesRead === 0) throw new Error(`blob file ended at byte ${pos}`);
          chunk = buf.subarray(0, bytesRead);
        }
        pos += chunk.byteLength;
        await sink.write(chunk);
      }
      await sink.end();
    } finally {
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
    const release = (): void => {
      if (!released) {
        released = true;
        this.release();
      }
    };
    const fill = this;
    const stream = new Readable({
      highWaterMark: READ_CHUNK,
      read() {
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
          if (pos >= limit) {
            if (!waiting) {
              waiting = true;
              fill.on('change', onChange);
            }
            return;
          }
          const mem = fill.fromMemory(pos, limit);
          if (mem !== undefined) {
            pos += mem.byteLength;
            if (!stream.push(mem)) return;
            continue;
          }
          const len = Math.min(READ_CHUNK, limit - pos);
          const buf = Buffer.allocUnsafe(len);
          const { bytesRead } = await fill.writer.handle.read(buf, 0, len, pos);
          if (stream.destroyed) return;
          pos += bytesRead;
          if (!stream.push(bytesRead === len ? buf : buf.subarray(0, bytesRead))) return;
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
