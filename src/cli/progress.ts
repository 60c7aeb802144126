/**
 * Progress for long commands (seed, export, import): a redrawn status line on a terminal, plain
 * log lines otherwise (CI logs, pipes). Writes to stderr so stdout stays the command's result.
 */
export class Progress {
  private readonly tty: boolean;
  private status = '';
  private lastDraw = 0;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = out.isTTY === true && process.env.CI === undefined;
  }

  /** A bar for done/total plus a status text; redrawn at most ten times a second on a terminal. */
  update(done: number, total: number, text: string): void {
    if (!this.tty) return;
    const width = 24;
    const filled = total === 0 ? width : Math.min(width, Math.round((done / total) * width));
    this.status = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${text}`;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    this.draw();
  }

  /** A line that stays (one per finished item); on a terminal the status line is redrawn below it. */
  line(text: string): void {
    if (this.tty) this.out.write(`\r\x1b[2K${text}\n`);
    else this.out.write(`${text}\n`);
    if (this.tty && this.status !== '') this.draw();
  }

  /** Clears the status line. */
  finish(): void {
    if (this.tty && this.status !== '') this.out.write('\r\x1b[2K');
    this.status = '';
  }

  private draw(): void {
    const cols = this.out.columns ?? 100;
    this.out.write(`\r\x1b[2K${this.status.slice(0, Math.max(cols - 1, 20))}`);
  }
}

/** Runs `work` over `items` with at most `limit` at a time. */
export async function forEachLimit<T>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const i = next++;
      await work(items[i] as T, i);
    }
  });
  await Promise.all(lanes);
}

/**
 * Reads an image list: one reference per line; `#` starts a comment (whole line or after a space);
 * blank lines are skipped. Returns the references with their line numbers for error messages.
 */
export function parseImageList(text: string): Array<{ image: string; line: number }> {
  const out: Array<{ image: string; line: number }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const hash = raw.search(/(^|\s)#/);
    const image = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (image !== '') out.push({ image, line: i + 1 });
  });
  return out;
}
