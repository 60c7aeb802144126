/** containerd 1.6 as root with its own root, state and socket in `dir` (no CRI plugin). */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './net.ts';

export interface Containerd {
  /** The gRPC socket (`ctr --address`). */
  sock: string;
  stop(): void;
}

export async function startContainerd(dir: string): Promise<Containerd> {
  mkdirSync(dir, { recursive: true });
  const sock = join(dir, 'containerd.sock');
  writeFileSync(join(dir, 'config.toml'), `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n`);
  const child = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let exited: number | null | undefined;
  child.once('close', (c) => (exited = c));
  await waitFor('containerd to listen', () => {
    if (exited !== undefined) throw new Error(`containerd exited with ${exited}`);
    return existsSync(sock);
  }, 30_000);
  return { sock, stop: () => child.kill('SIGTERM') };
}
