/**
 * A blob relayed from the upstream to one client without caching it: what the mirror does when
 * its disk cannot take the blob (issue 14, defect 6). Every byte is still hashed, and the last
 * byte sent is held back until the whole body's size and digest are checked, so a cut or wrong
 * upstream body reaches the client as a failed transfer, never as a short success (the same rule
 * as a fill's readers). A range is served by reading the whole body and sending only its part.
 */
import type { Readable, Writable } from 'node:stream';
import type { BlobBody } from '../upstream/index.ts';
import type { Digest } from '../oci/index.ts';
import { BlobVerifyError, ChunkSink, ContentCheck } from '../store/index.ts';
import type { BlobResult } from './types.ts';

/**
 * Relays `body` (the upstream's answer for `d`, `size` bytes when known) to one client; `onBytes`
 * is told once how many bytes came from the upstream, whatever part of them the client asked for.
 */
export class RelayBlob implements BlobResult {
  readonly cache = 'miss';
  private used = false;

  constructor(
    private readonly d: Digest,
    readonly size: number | undefined,
    private readonly body: BlobBody,
    private readonly onBytes: (n: number) => void,
  ) {}

  get digest(): string {
    return this.d.value;
  }

  private take(): void {
    if (this.used) throw new Error('a relayed blob is sent once');
    this.used = true;
  }

  private notStored(): Promise<never> {
    return Promise.reject(new BlobVerifyError(`blob ${this.d.value} was relayed without caching: the cache disk is full`));
  }

  async open(): Promise<Readable> {
    this.take();
    this.body.destroy();
    return this.notStored();
  }

  async sendTo(dest: Writable, ready: () => void, start = 0, end?: number): Promise<void> {
    this.take();
    const sink = new ChunkSink(dest);
    const content = new ContentCheck(this.d, this.size);
    let held: Buffer | undefined;
    let started = false;
    const send = async (chunk: Buffer): Promise<void> => {
      if (!started) {
        started = true;
        ready();
      }
      await sink.write(chunk);
    };
    try {
      for await (const raw of this.body) {
        const chunk = raw as Buffer;
        const pos = content.bytes;
        content.add(chunk);
        const from = Math.max(start - pos, 0);
        const to = Math.min(chunk.byteLength, (end ?? Number.MAX_SAFE_INTEGER) - pos);
        if (to > from) {
          if (held !== undefined) await send(held);
          held = chunk.subarray(from, to);
        }
      }
      content.check();
      if (held !== undefined) await send(held);
      if (!started) ready();
      await sink.end();
    } finally {
      this.onBytes(content.bytes);
      this.body.destroy();
      sink.dispose();
    }
  }

  stored(): Promise<void> {
    return this.notStored();
  }

  discard(): void {
    if (this.used) return;
    this.used = true;
    this.body.destroy();
  }
}
