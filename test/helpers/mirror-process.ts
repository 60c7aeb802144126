/** Runs regmirror as its own process (bin/regmirror.js serve --config), parsing its bound port from the log. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { waitFor } from './net.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
export const BIN = join(ROOT, 'bin/regmirror.js');
/** The node flags the server runs with: bin/regmirror.js's shebang and `npm start` pass them too. */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=4'];

export interface MirrorProcess {
  pid: number;
  port: number;
  url: string;
  /** host:port, as clients write it in image references. */
  hostPort: string;
  logFile: string;
  logText(): string;
  stop(): Promise<number | null>;
}

/**
 * A mirror.toml that listens on a free loopback port and keeps its cache in ./data next to it;
 * `body` adds the rest ([cache], [log], [[registry]] ...).
 */
export function mirrorToml(body: string, defaultRegistry = ''): string {
  return `default_registry = "${defaultRegistry}"\n[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n${body}`;
}

/**
 * Writes `toml` to dir/mirror.toml and starts the mirror on it; the config should listen on
 * 127.0.0.1:0. The mirror's stdout and stderr go straight to a log file (as under an operator's
 * `>> file`), so this process spends no CPU relaying them. `nodeArgs` go before the script
 * (`--cpu-prof`, heap flags: options NODE_OPTIONS refuses).
 */
export async function startMirror(dir: string, toml: string, env: NodeJS.ProcessEnv = {}, nodeArgs: string[] = []): Promise<MirrorProcess> {
  const config = join(dir, 'mirror.toml');
  writeFileSync(config, toml);
  const logFile = join(dir, `mirror-${Date.now()}.log`);
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...nodeArgs, BIN, 'serve', '--config', config], {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
    });
  } finally {
    closeSync(fd);
  }
  let exited: number | null | undefined;
  child.once('close', (code) => {
    exited = code;
  });
  let port = 0;
  const readLog = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  try {
    await waitFor('regmirror to listen', () => {
      if (exited !== undefined) throw new Error(`regmirror exited with ${exited}: ${readLog()}`);
      const m = /"port":(\d+).*"msg":"regmirror listening"/.exec(readLog());
      if (m === null) return false;
      port = Number(m[1]);
      return true;
    }, 30_000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    pid: child.pid ?? 0,
    port,
    url: `http://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    logFile,
    logText: readLog,
    stop: () =>
      new Promise((res) => {
        if (exited !== undefined) return res(exited);
        child.once('close', (code) => res(code));
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 8_000).unref();
      }),
  };
}
