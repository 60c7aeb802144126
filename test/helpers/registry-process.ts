/**
 * Runs a real upstream: the CNCF Distribution registry from Debian's `docker-registry` package,
 * on a free 127.0.0.1 port with filesystem storage in a temp dir and the access log captured.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, waitFor } from './net.ts';

export interface RegistryProcess {
  port: number;
  url: string;
  dir: string;
  logFile: string;
  /** Access-log lines (combined log format) for requests whose request line matches `method path`. */
  accessCount(method: string, pathFragment: string): number;
  /**
   * Waits (bounded) until the access log holds exactly `expected` matching lines and stays so for
   * a moment (the registry writes a line after its response is sent); returns the final count.
   */
  settledCount(method: string, pathFragment: string, expected: number): Promise<number>;
  stop(): Promise<void>;
}

export const REGISTRY_BIN = process.env.REGMIRROR_TEST_REGISTRY_BIN ?? '/usr/bin/docker-registry';

/** Starts docker-registry; `extraYaml` is appended to its config (e.g. a proxy section). */
export async function startRegistry(dir: string, extraYaml = ''): Promise<RegistryProcess> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${join(dir, 'storage')}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
${extraYaml}`,
  );
  const logFile = join(dir, 'registry.log');
  const out = createWriteStream(logFile);
  const child: ChildProcess = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`docker-registry on ${url}`, async () => {
    if (exited) throw new Error(`docker-registry exited; see ${logFile}`);
    const r = await fetch(`${url}/v2/`);
    return r.status === 200;
  });
  const accessCount = (method: string, pathFragment: string): number =>
    readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes(`"${method} `) && l.includes(pathFragment)).length;
  return {
    port,
    url,
    dir,
    logFile,
    accessCount,
    async settledCount(method, pathFragment, expected) {
      const deadline = Date.now() + 3_000;
      let n = accessCount(method, pathFragment);
      while (n !== expected && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        n = accessCount(method, pathFragment);
      }
      await new Promise((r) => setTimeout(r, 100));
      return accessCount(method, pathFragment);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
      }),
  };
}
