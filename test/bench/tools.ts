/** Benchmark tools: the `hey` load generator, an RSS sampler, byte counting from access logs. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface LoadResult {
  rps: number;
  p99Ms: number;
  ok: number;
  other: number;
}

/** Runs hey (Debian package `hey`; handles HEAD correctly) against one URL, as fast as it can or at `perConnectionRate`. */
export async function hey(url: string, method: 'GET' | 'HEAD', seconds: number, connections = 64, headers: Record<string, string> = {}, perConnectionRate?: number): Promise<LoadResult> {
  const args = ['-z', `${seconds}s`, '-c', String(connections), '-m', method, '-disable-compression'];
  // -q: requests per second per connection (a fixed offered load instead of as fast as possible).
  if (perConnectionRate !== undefined) args.push('-q', String(perConnectionRate));
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  // BENCH_HEY_CPUS pins hey to those CPUs (taskset), e.g. to keep it off a pinned mirror's core.
  const pin = process.env.BENCH_HEY_CPUS;
  const { stdout } = await run(pin === undefined ? 'hey' : 'taskset', [...(pin === undefined ? [] : ['-c', pin, 'hey']), ...args, url], { timeout: (seconds + 60) * 1000, maxBuffer: 16 * 1024 * 1024 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const p99 = Number(/99% in ([\d.]+) secs/.exec(stdout)?.[1] ?? NaN) * 1000;
  let ok = 0;
  let other = 0;
  for (const m of stdout.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)) {
    if (m[1] === '200') ok += Number(m[2]);
    else other += Number(m[2]);
  }
  const errors = /Error distribution:\s*\n\s+\[(\d+)\]/.exec(stdout);
  if (errors !== null) other += Number(errors[1]);
  return { rps, p99Ms: p99, ok, other };
}

/**
 * Per-request latencies (ms) of HEAD requests to `urls`, in order, on one kept-alive connection,
 * as curl measures them (`time_total`). A C client: an in-process Node client adds its own event
 * loop and GC to every figure (against a do-nothing Node server undici showed p99 ~2 ms, curl
 * ~0.15 ms), which is no measure of the server. Every answer must be 200.
 */
export async function curlHeadLatencies(urls: string[], headers: Record<string, string> = {}): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'curl-'));
  try {
    const config = join(dir, 'urls');
    writeFileSync(config, urls.map((u) => `url = "${u}"\noutput = "/dev/null"\n`).join(''));
    const args = ['-s', '-I', '-K', config, '-w', '%{http_code} %{time_total}\\n'];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    const { stdout } = await run('curl', args, { timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
    const lines = stdout.trim().split('\n');
    if (lines.length !== urls.length) throw new Error(`curl answered ${lines.length} of ${urls.length} requests`);
    return lines.map((l) => {
      const [code, secs] = l.split(' ');
      if (code !== '200') throw new Error(`curl: HTTP ${code ?? '?'} in the latency run`);
      return Number(secs) * 1000;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Samples a process's resident set size from /proc every 50 ms; `peakMiB()` is the highest seen. */
export class RssSampler {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
  }
  private sample(): void {
    try {
      const kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'))?.[1] ?? 0);
      if (kb > this.peak) this.peak = kb;
    } catch {
      /* process gone */
    }
  }
  /** Stops sampling and returns the peak in MiB. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak / 1024;
  }
}

/** Sum of response bytes and count of blob GETs (status 200) in a combined access log, for lines after `fromLine`. */
export function upstreamBlobTraffic(logFile: string, fromLine = 0, digest?: string): { bytes: number; gets: number; lines: number } {
  const lines = readFileSync(logFile, 'utf8').split('\n');
  let bytes = 0;
  let gets = 0;
  for (const line of lines.slice(fromLine)) {
    const m = /"GET [^"]*\/blobs\/(sha256:[0-9a-f]{64}) HTTP\/[\d.]+" 200 (\d+)/.exec(line);
    if (m === null || (digest !== undefined && m[1] !== digest)) continue;
    bytes += Number(m[2]);
    gets++;
  }
  return { bytes, gets, lines: lines.length - 1 };
}

/**
 * A fixed offered load of `connections` x `perConnectionRate` req/s whose arrivals are spread out:
 * hey's workers all tick together, so one hey at -c 64 -q 16 sends bursts of 64 at once and its
 * p99 is the queue behind a burst (13-22 ms here with nothing else running). `groups` hey
 * processes of connections/groups workers each start a tick apart instead. rps, ok and other are
 * summed; p99 is the worst group's.
 */
export async function heySpread(url: string, method: 'GET' | 'HEAD', seconds: number, connections: number, perConnectionRate: number, headers: Record<string, string> = {}, groups = 8): Promise<LoadResult> {
  const tickMs = 1000 / perConnectionRate;
  const runs = Array.from({ length: groups }, (_, i) =>
    new Promise<void>((r) => setTimeout(r, (i * tickMs) / groups)).then(() => hey(url, method, seconds, Math.max(1, Math.round(connections / groups)), headers, perConnectionRate)),
  );
  const all = await Promise.all(runs);
  return { rps: all.reduce((a, x) => a + x.rps, 0), p99Ms: Math.max(...all.map((x) => x.p99Ms)), ok: all.reduce((a, x) => a + x.ok, 0), other: all.reduce((a, x) => a + x.other, 0) };
}
