/**
 * Staged blob writes (issue 7). A blob being written is copied into a few 1 MiB blocks, and each
 * full block is written to the file in one call while the next one fills. The blocks are also the
 * fill's memory: readers keeping up with a download copy the newest bytes from them instead of
 * reading the file back. The blocks come from a process-wide pool and are reused, so the
 * upstream's own chunks are dropped as soon as they are hashed and copied: kept for readers
 * instead, every 64 KiB chunk outlived a few young-generation collections and waited for a major
 * one, and 20 concurrent pulls went past 150 MiB RSS on dead chunks.
 *
 * Direct I/O: written through the page cache, every byte is copied once more into freshly
 * allocated page-cache pages, a fifth of the mirror's CPU in a cold pull (more than sha256) on the
 * cores the client needs, and a big layer evicts whatever else was cached. With O_DIRECT the device
 * takes the bytes straight from the block. O_DIRECT wants the memory, the file offset and the length
 * aligned: Node's Buffers come from malloc (16-byte aligned), a WebAssembly.Memory is page aligned,
 * so the blocks are carved from those. The last, partial block is padded with zeros up to the
 * alignment and the file is cut back to the real size afterwards.
 */
import { constants } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';

// Node has WebAssembly; the project's TypeScript libs (no DOM) do not declare it.
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer } };

/** Bytes per staging block, and per write. */
export const BLOCK = 1024 * 1024;
/** File offsets and lengths of direct writes are multiples of this (covers 512e and 4Kn disks). */
const ALIGN = 4096;
/** Blocks one writer holds at most: the memory window readers are served from is 3 to 4 MiB. */
const BLOCKS_PER_WRITER = 4;
const WASM_PAGE = 64 * 1024;
const SLAB_BLOCKS = 8;
/**
 * Blocks in the whole process. They are kept for reuse, so this bounds the memory they hold
 * (pages of a block count once first written). Past it, writers share what is left or, with no
 * block at all, write through to the file unstaged.
 */
const POOL_BLOCKS = 32;

/** A free list of page-aligned blocks, carved from WebAssembly memories of SLAB_BLOCKS blocks. */
class BlockPool {
  private readonly free: Buffer[] = [];
  private created = 0;

  take(): Buffer | undefined {
    if (this.free.length === 0 && this.created + SLAB_BLOCKS <= POOL_BLOCKS) {
      const pages = (SLAB_BLOCKS * BLOCK) / WASM_PAGE;
      const slab = Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer);
      for (let i = SLAB_BLOCKS - 1; i >= 0; i--) this.free.push(slab.subarray(i * BLOCK, (i + 1) * BLOCK));
      this.created += SLAB_BLOCKS;
    }
    return this.free.pop();
  }

  give(b: Buffer): void {
    this.free.push(b);
  }
}

const pool = new BlockPool();

/** Writes `len` bytes of `buf` at file offset `at`, however many calls the kernel needs. */
export async function writeAll(fh: FileHandle, buf: Uint8Array, len: number, at: number): Promise<void> {
  let off = 0;
  while (off < len) off += (await fh.write(buf, off, len - off, at + off)).bytesWritten;
}

/**
 * Whether files in `dir` take direct writes from aligned memory: a filesystem may refuse
 * O_DIRECT (tmpfs before Linux 6.6) or the platform may not have it. Returns the reason when not.
 */
export async function probeDirectIo(dir: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (constants.O_DIRECT === undefined) return { ok: false, reason: 'O_DIRECT is not available on this platform' };
  const path = `${dir}/.direct-io-probe-${process.pid}`;
  const block = pool.take();
  if (block === undefined) return { ok: false, reason: 'no aligned memory' };
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DIRECT, 0o600);
    block.fill(0, 0, ALIGN);
    await writeAll(fh, block, ALIGN, 0);
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  } finally {
    pool.give(block);
    await fh?.close().catch(() => undefined);
    await rm(path, { force: true });
  }
}

interface Block {
  buf: Buffer;
  /** Offset in the blob of the block's first byte. */
  start: number;
  /** Bytes staged in it. */
  len: number;
  /** Set once the block went to the file; settles when it is written. */
  written?: Promise<void>;
}

/** Appends to a file through staging blocks, which readers may copy the newest bytes from. */
export class StagedFile {
  /** Oldest first, contiguous; the last is the one being filled. */
  private blocks: Block[] = [];
  private end = 0;
  private inFile = 0;
  /** Every block write, one after the other, in order. */
  private tail: Promise<void> = Promise.resolve();
  private released = false;

  private constructor(
    /** The handle the blocks are written with: an O_DIRECT one, or the writer's own. */
    private readonly fh: FileHandle,
    /** Direct I/O: the file is padded to the alignment until the writer cuts it. */
    readonly direct: boolean,
    first: Buffer,
    /** Called each time more bytes are in the file. */
    private readonly onFlushed: () => void,
  ) {
    this.blocks.push({ buf: first, start: 0, len: 0 });
  }

  /**
   * Stages writes to `path` (which exists), with direct I/O when `direct`, else through `handle`.
   * Undefined when no block is free: the caller then writes unstaged.
   */
  static async open(path: string, handle: FileHandle, direct: boolean, onFlushed: () => void): Promise<StagedFile | undefined> {
    const first = pool.take();
    if (first === undefined) return undefined;
    try {
      const fh = direct ? await open(path, constants.O_WRONLY | constants.O_DIRECT) : handle;
      return new StagedFile(fh, direct, first, onFlushed);
    } catch (e) {
      pool.give(first);
      throw e;
    }
  }

  /** Bytes in the file so far; the rest of what was appended is only in the blocks. */
  get bytesInFile(): number {
    return this.inFile;
  }

  /** Copies `chunk` into the blocks; waits only when it must reuse a block still being written. */
  async append(chunk: Uint8Array): Promise<void> {
    let off = 0;
    while (off < chunk.byteLength) {
      let cur = this.blocks[this.blocks.length - 1] as Block;
      if (cur.len === BLOCK) cur = await this.nextBlock();
      const n = Math.min(chunk.byteLength - off, BLOCK - cur.len);
      cur.buf.set(off === 0 && n === chunk.byteLength ? chunk : chunk.subarray(off, off + n), cur.len);
      cur.len += n;
      off += n;
      this.end += n;
      if (cur.len === BLOCK) this.flush(cur, BLOCK);
    }
  }

  /** A fresh block from the pool, or the oldest one once it is in the file. */
  private async nextBlock(): Promise<Block> {
    const fresh = this.blocks.length < BLOCKS_PER_WRITER ? pool.take() : undefined;
    let b: Block;
    if (fresh !== undefined) {
      b = { buf: fresh, start: this.end, len: 0 };
    } else {
      const oldest = this.blocks[0] as Block;
      await oldest.written; // rethrows a failed write
      this.blocks.shift();
      b = oldest;
      b.start = this.end;
      b.len = 0;
      b.written = undefined;
    }
    this.blocks.push(b);
    return b;
  }

  /** Queues the block's write (`len` bytes of it, padding included). */
  private flush(b: Block, len: number): void {
    const at = b.start;
    const end = b.start + b.len;
    const buf = b.buf;
    this.tail = this.tail.then(async () => {
      await writeAll(this.fh, buf, len, at);
      this.inFile = end;
      this.onFlushed();
    });
    b.written = this.tail;
    b.written.catch(() => undefined); // awaited by nextBlock, finish or release
  }

  /**
   * Copies up to `len` bytes at blob offset `pos` from the blocks into `dst` at `dstOff`; returns
   * how many, 0 when `pos` is no longer (or not yet) in memory. Synchronous, so a block cannot be
   * reused in the middle of it.
   */
  copyOut(pos: number, dst: Buffer, dstOff: number, len: number): number {
    if (this.released) return 0;
    const first = this.blocks[0] as Block;
    if (pos < first.start || pos >= this.end) return 0;
    let copied = 0;
    for (const b of this.blocks) {
      const at = pos + copied;
      if (at >= b.start + b.len) continue;
      const from = at - b.start;
      const n = Math.min(b.len - from, len - copied);
      b.buf.copy(dst, dstOff + copied, from, from + n);
      copied += n;
      if (copied === len) break;
    }
    return copied;
  }

  /**
   * Writes what is staged and waits for every write. With direct I/O the last block is padded
   * with zeros up to the alignment, so the file may be longer than the bytes appended: the caller
   * cuts it to size.
   */
  async finish(): Promise<void> {
    const cur = this.blocks[this.blocks.length - 1] as Block;
    if (cur.len > 0 && cur.written === undefined) {
      let len = cur.len;
      if (this.direct) {
        len = Math.ceil(cur.len / ALIGN) * ALIGN;
        cur.buf.fill(0, cur.len, len);
      }
      this.flush(cur, len);
    }
    await this.tail;
  }

  /**
   * Waits for the writes in flight, returns the blocks and closes a direct handle. Never rejects:
   * a failed write already failed finish() or append().
   */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.tail.catch(() => undefined);
    for (const b of this.blocks) pool.give(b.buf);
    this.blocks = [];
    if (this.direct) await this.fh.close().catch(() => undefined);
  }
}
