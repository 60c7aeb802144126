/**
 * regmirror command line. `regmirror serve [--config FILE]` (default command).
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config/index.ts';
import { createLogger } from '../log/index.ts';
import { startServer } from './serve.ts';

const USAGE = `Usage: regmirror <command> [options]

Commands:
  serve      run the mirror (default)

Options for serve:
  -c, --config FILE   mirror.toml to use (default: $REGMIRROR_CONFIG, else the embedded default:
                      listen 127.0.0.1:5000, data in ./data, Docker Hub + gcr.io, ghcr.io, quay.io,
                      registry.k8s.io mirrored anonymously)
  -h, --help          this help
  -v, --version       print the version
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (e) {
    process.stderr.write(`regmirror: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version === true) {
    process.stdout.write(`regmirror ${version()}\n`);
    return 0;
  }
  const command = positionals[0] ?? 'serve';
  if (command !== 'serve' || positionals.length > 1) {
    process.stderr.write(`regmirror: unknown command "${positionals.join(' ')}"\n\n${USAGE}`);
    return 2;
  }
  let config;
  try {
    config = loadConfig(values.config ?? process.env.REGMIRROR_CONFIG);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`regmirror: configuration error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const log = createLogger(config.log.level);
  let server;
  try {
    server = await startServer(config, log);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`regmirror: cannot start: ${err.code === 'EADDRINUSE' ? `address ${config.server.listen.host}:${config.server.listen.port} is already in use (server.listen)` : err.message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'shutting down');
      void server.close().then(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.flush();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`regmirror: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
