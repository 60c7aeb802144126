/**
 * regmirror command line.
 *   regmirror serve   [--config FILE]                      run the mirror (default command)
 *   regmirror verify  IMAGE [--local] [--json] [--mirror URL] [--config FILE]
 *   regmirror inspect IMAGE [--json] [--mirror URL] [--config FILE]
 *   regmirror seed    LIST [--platform P]... [--concurrency N] [--json] [--config FILE]
 *   regmirror export  LIST -o BUNDLE.tar[.gz] [--config FILE]
 *   regmirror import  BUNDLE.tar[.gz] [--config FILE]
 *   regmirror config  RUNTIME --mirror-url URL [--ca FILE] [--out DIR] [--no-fallback] [--digest-only]
 *                     [--default] [--namespace NAME] [--credentials FILE] [--config FILE]
 * Exit codes: 0 ok, 1 mismatch / corruption / runtime failure, 2 usage or configuration error,
 * 3 an image could not be resolved.
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { ConfigError, loadConfig, type Config } from '../config/index.ts';
import { createLogger } from '../log/index.ts';
import { RegistryError } from '../oci/index.ts';
import { startServer } from './serve.ts';
import { defaultMirrorUrl, verifyLocal, verifyRemote } from './verify.ts';
import { openRuntime } from './runtime.ts';
import { formatSeedSummary, seed } from './seed.ts';
import { BundleError, exportBundle, importBundle } from './bundle.ts';
import { formatBytes, parseImageList } from './progress.ts';
import { RUNTIMES, clientConfig, type ClientConfigOptions, type Runtime } from './client-config.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const USAGE = `Usage: regmirror <command> [options]

Commands:
  serve                 run the mirror (default)
  verify IMAGE          compare IMAGE's repo digest through the mirror with the upstream's;
                        MATCH exits 0, MISMATCH 1, a side that cannot be resolved 3
  verify --local IMAGE  re-hash the cached manifest(s) and blobs of IMAGE; corruption exits 1
  inspect IMAGE         show IMAGE's repo digests and cache state (like crictl inspecti)
  seed LIST             pull every image in LIST (a file, or - for stdin: one reference per line,
                        # comments) through the cache; exits 1 when any image failed
  export LIST -o FILE   write the cached images in LIST to an OCI-layout tar bundle
                        (.tar, or .tar.gz / .tgz compressed), for carrying to an air-gapped site
  import FILE           verify every digest of a bundle, then add its images to the cache
  config RUNTIME        print (or --out DIR: write) the client configuration that points RUNTIME
                        at this mirror: containerd, docker, registries-conf, gdc, openshift

Options:
  -c, --config FILE   mirror.toml (default: $REGMIRROR_CONFIG, else the embedded default:
                      listen 127.0.0.1:5000, data in ./data, Docker Hub + gcr.io, ghcr.io, quay.io,
                      registry.k8s.io mirrored anonymously)
  -m, --mirror URL    where the mirror answers (verify, inspect; default: from server.listen)
      --local         verify the cache on disk instead of comparing with the upstream
      --json          machine-readable output
      --platform P    seed: only these platforms of an index (os/arch[/variant]; repeat or
                      separate with commas); default every platform
      --concurrency N seed: images pulled at once (default 4)
  -o, --output FILE   export: the bundle to write
      --mirror-url URL  config: where clients reach the mirror (https://mirror.example:5000)
      --ca FILE         config: the mirror's CA certificate path on the client machines
      --out DIR         config: write the files under DIR instead of printing them
      --no-fallback     config: containerd / openshift never fall back to the real registry
      --digest-only     config: registries-conf mirror-by-digest-only
      --default         config: containerd also gets certs.d/_default/hosts.toml
      --namespace NAME  config: containerd / gdc use the endpoint URL/v2/NAME of that [[namespace]]
      --credentials F   config: gdc pullCredentialConfigPath
  -h, --help          this help
  -v, --version       print the version

IMAGE is a reference as the runtime writes it: gcr.io/foo/bar:1.0, nginx, quay.io/x/y@sha256:...
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function loadOrExplain(file: string | undefined): Config | undefined {
  try {
    return loadConfig(file ?? process.env.REGMIRROR_CONFIG);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`regmirror: configuration error: ${e.message}\n`);
      return undefined;
    }
    throw e;
  }
}

async function serveCommand(config: Config): Promise<number> {
  const log = createLogger(config.log.level);
  let server;
  try {
    server = await startServer(config, log);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`regmirror: cannot start: ${err.code === 'EADDRINUSE' ? `an address in use (server.listen ${config.server.listen.host}:${config.server.listen.port} or api.listen)` : err.message}\n`);
    return 1;
  }
  // One failed request must not end the process: an error escaping a request's own handling (an
  // event-handler throw inside a library, a promise nobody awaited) is logged with its stack and
  // the server goes on; each request's own failures are answered where they happen.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception; the server keeps running'));
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection; the server keeps running'));
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

async function verifyCommand(config: Config, image: string, opts: { local: boolean; json: boolean; mirror: string }): Promise<number> {
  if (opts.local) {
    const r = await verifyLocal(config, image);
    if (opts.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    else {
      process.stdout.write(`image   ${image}\ndigest  ${r.digest ?? '-'}\n`);
      for (const c of r.checks) process.stdout.write(`${c.state.toUpperCase().padEnd(8)} ${c.kind.padEnd(8)} ${c.digest}${c.detail === undefined ? '' : `  (${c.detail})`}\n`);
      process.stdout.write(r.ok ? 'INTACT\n' : `${r.detail ?? 'CORRUPT: the blobs marked CORRUPT do not match their digests; delete them so the mirror fetches them again'}\n`);
    }
    return r.ok ? 0 : r.digest === undefined ? 3 : 1;
  }
  const r = await verifyRemote(config, image, opts.mirror);
  if (opts.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else {
    const line = (name: string, s: typeof r.mirror) => `${name.padEnd(9)} ${s.ok ? `${s.repoDigest}  (${s.detail})` : `FAILED: ${s.detail}`}\n`;
    process.stdout.write(`image     ${image}\n${line('mirror', r.mirror)}${line('upstream', r.upstream)}${r.result}${r.note === undefined ? '' : `: ${r.note}`}\n`);
  }
  return r.result === 'MATCH' ? 0 : r.result === 'MISMATCH' ? 1 : 3;
}

async function inspectCommand(image: string, opts: { json: boolean; mirror: string }): Promise<number> {
  const res = await request(`${opts.mirror}/_regmirror/v1/provenance?image=${encodeURIComponent(image)}`).catch((e: unknown) => {
    throw new Error(`mirror ${opts.mirror} unreachable: ${(e as Error).message}`);
  });
  const body = (await res.body.json()) as Record<string, unknown> & { errors?: Array<{ message: string }> };
  if (res.statusCode !== 200) {
    process.stderr.write(`regmirror: ${body.errors?.[0]?.message ?? `HTTP ${res.statusCode}`}\n`);
    return 3;
  }
  const p = body as unknown as { registry: string; repository: string; digest: string; size: number; tags: string[]; repoDigests: string[] };
  const out = {
    status: { id: p.digest, repoTags: p.tags.map((t) => `${p.registry}/${p.repository}:${t}`), repoDigests: p.repoDigests, size: String(p.size) },
    info: { provenance: body },
  };
  process.stdout.write(opts.json ? `${JSON.stringify(out)}\n` : `${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

function readList(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the image list ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const list = parseImageList(text).map((l) => l.image);
  if (list.length === 0) throw new UsageError(`${file === '-' ? 'stdin' : file} lists no images`);
  return list;
}

class UsageError extends Error {}

interface CacheCommandOptions {
  json: boolean;
  platforms: string[];
  concurrency: number;
  output: string | undefined;
}

/** seed / export / import: commands that open the cache directly (beside a running server or not). */
async function cacheCommand(command: string, config: Config, arg: string, opts: CacheCommandOptions): Promise<number> {
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level);
  if (command === 'export' && opts.output === undefined) throw new UsageError('export needs -o FILE (the bundle to write)');
  const images = command === 'import' ? [] : readList(arg);
  const rt = await openRuntime(config, log, false);
  try {
    if (command === 'seed') {
      const s = await seed(rt, images, { platforms: opts.platforms, concurrency: opts.concurrency });
      process.stdout.write(opts.json ? `${JSON.stringify(s, null, 2)}\n` : `${formatSeedSummary(s)}\n`);
      return s.failed.length === 0 ? 0 : 1;
    }
    if (command === 'export') {
      const out = opts.output ?? '';
      const s = await exportBundle(rt, images, out);
      if (opts.json) process.stdout.write(`${JSON.stringify({ file: out, ...s }, null, 2)}\n`);
      else {
        process.stdout.write(`wrote ${out}: ${s.images} images, ${s.manifests} manifests, ${s.blobs} blobs, ${formatBytes(s.bytes)} in ${(s.durationMs / 1000).toFixed(1)} s\n`);
        for (const c of s.skippedChildren) process.stdout.write(`note: index child not cached, left out: ${c}\n`);
      }
      return 0;
    }
    const s = await importBundle(rt, arg);
    if (opts.json) process.stdout.write(`${JSON.stringify({ file: arg, ...s }, null, 2)}\n`);
    else {
      for (const i of s.images) process.stdout.write(`imported ${i.name}  ${i.digest}\n`);
      process.stdout.write(`imported ${s.images.length} images: ${s.manifests} manifests, ${s.blobs} blobs, ${formatBytes(s.bytes)} in ${(s.durationMs / 1000).toFixed(1)} s\n`);
    }
    return 0;
  } catch (e) {
    if (e instanceof BundleError || e instanceof RegistryError) {
      process.stderr.write(`regmirror: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    await rt.close();
  }
}

function configCommand(config: Config, runtime: string, o: Partial<ClientConfigOptions> & { out?: string }): number {
  if (!(RUNTIMES as readonly string[]).includes(runtime)) throw new UsageError(`unknown runtime "${runtime}": use one of ${RUNTIMES.join(', ')}`);
  if (o.mirrorUrl === undefined) throw new UsageError('config needs --mirror-url URL: where clients reach the mirror (e.g. https://mirror.example:5000)');
  let generated;
  try {
    generated = clientConfig(config, runtime as Runtime, { mirrorUrl: o.mirrorUrl, noFallback: o.noFallback === true, digestOnly: o.digestOnly === true, defaultHost: o.defaultHost === true, ...(o.ca === undefined ? {} : { ca: o.ca }), ...(o.namespace === undefined ? {} : { namespace: o.namespace }), ...(o.credentials === undefined ? {} : { credentials: o.credentials }) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  for (const f of generated.files) {
    if (o.out !== undefined) {
      const target = join(o.out, f.path);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, f.content);
      process.stdout.write(`wrote ${target}  (install to ${f.installTo})\n`);
    } else {
      process.stdout.write(`# ==> ${f.path}  (install to ${f.installTo})\n${f.content}\n`);
    }
  }
  for (const n of generated.notes) process.stderr.write(`note: ${n}\n`);
  return 0;
}

const COMMANDS: Record<string, number> = { serve: 0, verify: 1, inspect: 1, seed: 1, export: 1, import: 1, config: 1 };

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        mirror: { type: 'string', short: 'm' },
        local: { type: 'boolean' },
        json: { type: 'boolean' },
        platform: { type: 'string', multiple: true },
        concurrency: { type: 'string' },
        output: { type: 'string', short: 'o' },
        'mirror-url': { type: 'string' },
        ca: { type: 'string' },
        out: { type: 'string' },
        'no-fallback': { type: 'boolean' },
        'digest-only': { type: 'boolean' },
        default: { type: 'boolean' },
        namespace: { type: 'string' },
        credentials: { type: 'string' },
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
  const [command = 'serve', ...args] = positionals;
  const wants = COMMANDS[command];
  if (wants === undefined || args.length !== wants) {
    const what = command === 'import' ? 'one bundle FILE' : command === 'seed' || command === 'export' ? 'one LIST file' : command === 'config' ? `one RUNTIME (${RUNTIMES.join(', ')})` : 'one IMAGE';
    process.stderr.write(`regmirror: ${wants === undefined ? `unknown command "${command}"` : `${command} takes ${wants === 0 ? 'no arguments' : what}`}\n\n${USAGE}`);
    return 2;
  }
  const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    process.stderr.write('regmirror: --concurrency must be a whole number from 1 to 64\n');
    return 2;
  }
  const config = loadOrExplain(values.config);
  if (config === undefined) return 2;
  if (command === 'serve') return serveCommand(config);
  try {
    if (command === 'config') {
      return configCommand(config, args[0] ?? '', {
        ...(values['mirror-url'] === undefined ? {} : { mirrorUrl: values['mirror-url'] }),
        ...(values.ca === undefined ? {} : { ca: values.ca }),
        ...(values.out === undefined ? {} : { out: values.out }),
        ...(values.namespace === undefined ? {} : { namespace: values.namespace }),
        ...(values.credentials === undefined ? {} : { credentials: values.credentials }),
        noFallback: values['no-fallback'] === true,
        digestOnly: values['digest-only'] === true,
        defaultHost: values.default === true,
      });
    }
    if (command === 'seed' || command === 'export' || command === 'import') {
      const platforms = (values.platform ?? []).flatMap((p) => p.split(',')).map((p) => p.trim()).filter((p) => p !== '');
      return await cacheCommand(command, config, args[0] ?? '', { json: values.json === true, platforms, concurrency, output: values.output });
    }
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`regmirror: ${e.message}\n`);
    return 2;
  }
  const image = args[0] ?? '';
  const mirror = (values.mirror ?? defaultMirrorUrl(config)).replace(/\/+$/, '');
  try {
    if (command === 'verify') return await verifyCommand(config, image, { local: values.local === true, json: values.json === true, mirror });
    return await inspectCommand(image, { json: values.json === true, mirror });
  } catch (e) {
    process.stderr.write(`regmirror: ${e instanceof RegistryError ? e.message : (e as Error).message}\n`);
    return e instanceof RegistryError ? 2 : 3;
  }
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
