/** Runs the real skopeo client against loopback registries (plain HTTP, no signature policy). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function skopeo(args: string[], timeoutMs = 120_000): Promise<string> {
  try {
    const { stdout } = await run('skopeo', ['--insecure-policy', ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${err.stderr ?? err.message}`);
  }
}
