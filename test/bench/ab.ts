/**
 * A/B of two builds in one run, alternating rounds, against one real upstream — for changes whose
 * effect is smaller than the benchmark's run-to-run noise (±15 % on this machine):
 *   node --import tsx test/bench/ab.ts OLD/bin/regmirror.js NEW/bin/regmirror.js [rounds]
 * (an old build: `git worktree add /tmp/old <commit> && ln -s $PWD/node_modules /tmp/old/ && (cd /tmp/old && npm run build)`).
 * Figures: warm manifest GET and HEAD by tag and by digest (hey, 64 connections, 4 s: req/s and the
 * mirror's CPU time per request), and 20 concurrent
 * `skopeo copy` of a 64 MiB image through a fresh mirror, cold then warm. Medians per build; the
 * order of the two builds flips every round. Run the same build on both sides first to see the noise.
 * AB_ONLY=<text> measures only the manifest figures whose label has it (e.g. `HEAD by digest`).
 * AB_PIN=1 pins the mirror to CPU 0 and hey to CPU 1. AB_OLD_TOML / AB_NEW_TOML add config to one side
 * (the same build on both sides with a setting off and on: pass the same bin twice as OLD and NEW
 * with different paths, e.g. bin/regmirror.js and ./bin/regmirror.js). AB_COPIES_ONLY=1 skips the manifest figures, AB_MANIFESTS_ONLY=1 the copies; AB_NODE_ARGS adds node options to both mirrors
 * (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 */
import { mkdtempSync, writeFileSync, readFileSync, openSync, closeSync, rmSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry } from '../helpers/registry-process.ts';
import { makeImage, pushImage } from '../helpers/fixtures.ts';
import { waitFor } from '../helpers/net.ts';
import { skopeo } from '../helpers/skopeo.ts';
import { hey } from './tools.ts';

const [oldArg, newArg, roundsArg] = process.argv.slice(2);
if (oldArg === undefined || newArg === undefined) {
  console.error('usage: node --import tsx test/bench/ab.ts OLD/bin/regmirror.js NEW/bin/regmirror.js [rounds]');
  process.exit(2);
}
const oldBin: string = oldArg;
const newBin: string = newArg;
const ROUNDS = Number(roundsArg ?? 3);
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json';
const work = mkdtempSync(join(tmpdir(), 'regmirror-ab-'));

async function start(bin: string, upstream: string): Promise<{ url: string; child: ChildProcess }> {
  const dir = mkdtempSync(join(work, 'mirror-'));
  // AB_OLD_TOML / AB_NEW_TOML: top-level tables added to that side's mirror.toml (the same build
  // with a setting on and off, e.g. AB_OLD_TOML=$'[metrics]\nenabled = false').
  const extra = (bin === oldBin ? process.env.AB_OLD_TOML : process.env.AB_NEW_TOML) ?? '';
  writeFileSync(join(dir, 'mirror.toml'), `default_registry = "gcr.io"\n[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n[cache]\ntag_ttl = "1h"\n[[registry]]\nhost = "gcr.io"\nendpoint = "${upstream}"\n${extra}\n`);
  const log = join(dir, 'log');
  const fd = openSync(log, 'a');
  const args = [process.execPath, '--max-semi-space-size=4', ...(process.env.AB_NODE_ARGS ?? '').split(' ').filter(Boolean), bin, 'serve', '--config', join(dir, 'mirror.toml')];
  // AB_PIN=1: the mirror on CPU 0 and hey on CPU 1, so neither takes the other's core (the steadiest figures).
  const pinned = process.env.AB_PIN === '1';
  if (pinned) process.env.BENCH_HEY_CPUS = '1';
  const child = spawn(pinned ? 'taskset' : args[0] ?? '', pinned ? ['-c', '0', ...args] : args.slice(1), { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let port = 0;
  await waitFor('the mirror to listen', () => {
    port = Number(/"port":(\d+)/.exec(readFileSync(log, 'utf8'))?.[1] ?? 0);
    return port > 0;
  }, 20_000);
  return { url: `http://127.0.0.1:${port}`, child };
}

async function stop(m: { child: ChildProcess }): Promise<void> {
  m.child.kill('SIGTERM');
  await new Promise((r) => m.child.once('exit', r));
}

/** User + system CPU time of a process so far, in µs (/proc/<pid>/stat, clock ticks of 10 ms). */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/**
 * Runs hey and notes req/s and the mirror's CPU time per answered request: req/s depends on the
 * share of the two cores hey takes, CPU per request much less (the steadier figure for a small change).
 */
async function load(note: (k: string, v: number) => void, label: string, child: ChildProcess, url: string, method: 'GET' | 'HEAD'): Promise<void> {
  if (process.env.AB_ONLY !== undefined && !label.includes(process.env.AB_ONLY)) return;
  const before = cpuMicros(child.pid ?? 0);
  const r = await hey(url, method, 4, 64, { Accept: ACCEPT });
  note(`${label}, req/s`, r.rps);
  note(`${label}, CPU µs/req`, (cpuMicros(child.pid ?? 0) - before) / Math.max(r.ok + r.other, 1));
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? NaN;

async function main(): Promise<void> {
  const upstream = await startRegistry(join(work, 'upstream'));
  try {
    await pushImage(upstream.url, 'bench/small', 'latest', makeImage('ab-small', [1024], 'oci'));
    await pushImage(upstream.url, 'bench/large', 'latest', makeImage('ab-large', [64 * 1024 * 1024], 'oci'));
    const res = new Map<string, number[]>();
    const note = (k: string, v: number): void => void res.set(k, [...(res.get(k) ?? []), Math.round(v)]);
    for (let round = 0; round < ROUNDS; round++) {
      // The order flips every round: the second mirror of a round measured 15 % slower cold copies
      // than the first with the *same* build on both sides.
      const sides = [['old', oldBin], ['new', newBin]] as const;
      for (const [name, bin] of round % 2 === 0 ? sides : [...sides].reverse()) {
        const m = await start(bin, upstream.url);
        try {
          const url = `${m.url}/v2/bench/small/manifests/latest`;
          if (process.env.AB_COPIES_ONLY === undefined) {
            await hey(url, 'GET', 1, 8, { Accept: ACCEPT });
            for (const method of ['GET', 'HEAD'] as const) await load(note, `${name} manifest ${method} by tag`, m.child, url, method);
            const digest = (await fetch(url, { method: 'HEAD', headers: { Accept: ACCEPT } })).headers.get('docker-content-digest') ?? '';
            const byDigest = `${m.url}/v2/bench/small/manifests/${digest}`;
            for (const method of ['GET', 'HEAD'] as const) await load(note, `${name} manifest ${method} by digest`, m.child, byDigest, method);
          }
          const host = m.url.replace('http://', '');
          for (const pass of process.env.AB_MANIFESTS_ONLY === undefined ? ['cold', 'warm'] : []) {
            const t = performance.now();
            await Promise.all(Array.from({ length: 20 }, (_, i) => skopeo(['copy', '--src-tls-verify=false', `docker://${host}/gcr.io/bench/large:latest`, `dir:${join(work, `${name}-${round}-${pass}-${i}`)}`])));
            note(`${name} 20 skopeo copies ${pass}, ms`, performance.now() - t);
          }
        } finally {
          await stop(m);
        }
      }
    }
    for (const [k, v] of res) console.log(`${k.padEnd(44)} ${v.join(' ').padEnd(30)} median ${median(v)}`);
  } finally {
    await upstream.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
