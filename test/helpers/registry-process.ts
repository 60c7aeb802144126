/**
 * Runs a real upstream: the CNCF Distribution registry from Debian's `docker-registry` package,
 * on a free 127.0.0.1 port with filesystem storage in a temp dir and the access log captured.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { freePort, waitFor } from './net.ts';

export interface RegistryProcess {
  pid: number;
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

export interface RegistryOptions {
  /** Top-level YAML sections appended to the config (auth:, proxy:). */
  extraYaml?: string;
  /** Lines nested under `http:` (indent 2), e.g. a tls: block. */
  httpYaml?: string;
  /** The registry serves TLS: its URL is https://. */
  tls?: boolean;
  /** Storage root (default dir/storage); several registries may serve one. */
  storageDir?: string;
  /** Port to listen on (default: a free one); a registry restarted on its old port. */
  port?: number;
}

/** Starts docker-registry; ready once its port accepts connections. */
export async function startRegistry(dir: string, opts: RegistryOptions = {}): Promise<RegistryProcess> {
  const extraYaml = opts.extraYaml ?? '';
  mkdirSync(dir, { recursive: true });
  const port = opts.port ?? (await freePort());
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
    rootdirectory: ${opts.storageDir ?? join(dir, 'storage')}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
${opts.httpYaml ?? ''}
${extraYaml}`,
  );
  const logFile = join(dir, 'registry.log');
  const readLog = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const out = createWriteStream(logFile);
  const child: ChildProcess = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const url = `${opts.tls === true ? 'https' : 'http'}://127.0.0.1:${port}`;
  await waitFor(`docker-registry on ${url}`, async () => {
    if (exited) throw new Error(`docker-registry exited: ${readLog().slice(-2000)}`);
    return new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.destroy();
        resolve(true);
      });
      sock.on('error', () => resolve(false));
    });
  });
  const accessCount = (method: string, pathFragment: string): number =>
    readLog()
      .split('\n')
      .filter((l) => l.includes(`"${method} `) && l.includes(pathFragment)).length;
  return {
    pid: child.pid ?? 0,
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
