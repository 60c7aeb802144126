/**
 * regmirror command line: parses arguments against the command table (commands.ts), calls the
 * module that does the work, prints. `regmirror help` lists the commands.
 * Exit codes: 0 ok, 1 mismatch / corruption / runtime failure, 2 usage or configuration error,
 * 3 an image could not be resolved.
 */
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { ConfigError, loadConfig, parseLogLevel, type Config } from '../config/index.ts';
import { createLogger } from '../log/index.ts';
import { RegistryError } from '../oci/index.ts';
import { startServer, type RunningServer } from './serve.ts';
import { packageVersion } from './version.ts';
import { cacheAction, cacheRef } from './cache.ts';
import { pinImage } from '../lifecycle/cache-admin.ts';
import { defaultMirrorUrl, verifyLocal, verifyRemote } from './verify.ts';
import { openRuntime } from './runtime.ts';
import { formatSeedSummary, seed } from './seed.ts';
import { BundleError, exportBundle, importBundle } from '../bundle/index.ts';
import { parseImageList } from './progress.ts';
import { formatBytes } from '../config/index.ts';
import { RUNTIMES, clientConfig, type ClientConfigOptions, type Runtime } from './client-config.ts';
import { mkdirSync, writeFileSync } from 'node:fs';
import { CONFIG_OPTION_RUNTIMES, UsageError, commandUsage, overviewUsage, parseCommandLine, type OptionValues } from './commands.ts';
import { dirname, join } from 'node:path';


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

async function serveCommand(first: Config, configFile: string | undefined, logLevel: string | undefined): Promise<number> {
  let config = first;
  if (logLevel !== undefined) {
    try {
      config = { ...config, log: { ...config.log, level: parseLogLevel(logLevel, '--log-level') } };
    } catch (e) {
      process.stderr.write(`regmirror: ${(e as Error).message}\n`);
      return 2;
    }
  }
  const log = createLogger(config.log.level, undefined, config.log.format);
  let server: RunningServer;
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
  // SIGHUP: read the config file again; a file that does not validate changes nothing.
  let reloading: Promise<void> = Promise.resolve();
  const reload = async (): Promise<void> => {
    const where = configFile ?? 'the embedded default configuration';
    let next: Config;
    try {
      next = loadConfig(configFile);
      if (logLevel !== undefined) next = { ...next, log: { ...next.log, level: parseLogLevel(logLevel, '--log-level') } };
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      log.error({ config: where, err: e.message }, `configuration reload refused, the running configuration stays: ${e.message}`);
      return;
    }
    try {
      const r = await server.reload(next);
      const fields = { config: where, changed: r.changed, ...(r.restartNeeded.length === 0 ? {} : { restartNeeded: r.restartNeeded }) };
      if (r.restartNeeded.length > 0) log.warn(fields, `configuration reloaded: ${r.changed.length === 0 ? 'nothing applied' : r.changed.join('; ')}; these keys keep their running values until a restart: ${r.restartNeeded.join('; ')}`);
      else log.info(fields, `configuration reloaded: ${r.changed.length === 0 ? 'nothing changed' : r.changed.join('; ')}`);
    } catch (e) {
      log.error({ config: where, err: (e as Error).message }, `configuration reload refused, the running configuration stays: ${(e as Error).message}`);
    }
  };
  const onHup = (): void => {
    reloading = reloading.then(reload, reload);
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal while draining: exiting now');
        log.flush();
        process.exit(1);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      void server.close().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  process.off('SIGHUP', onHup);
  log.info('stopped');
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


interface CacheCommandOptions {
  json: boolean;
  platforms: string[];
  concurrency: number;
  output: string | undefined;
  pin: boolean;
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
      if (opts.pin) {
        const failed = new Set(s.failed.map((f) => f.image));
        for (const image of images) {
          if (failed.has(image)) continue;
          await pinImage(rt.meta, cacheRef(config, image), 'seed');
        }
      }
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

/** Refuses an unknown RUNTIME and options that do not apply to it (before any configuration is read). */
function checkConfigOptions(runtime: string, values: OptionValues): void {
  if (!(RUNTIMES as readonly string[]).includes(runtime)) throw new UsageError(`unknown runtime "${runtime}": use one of ${RUNTIMES.join(', ')}`, 'config');
  for (const [option, runtimes] of Object.entries(CONFIG_OPTION_RUNTIMES)) {
    if (values[option] !== undefined && !runtimes.includes(runtime)) throw new UsageError(`--${option} does not apply to ${runtime}: it is for ${runtimes.join(', ')}`, 'config');
  }
  if (values['mirror-url'] === undefined) throw new UsageError('config needs --mirror-url URL: where clients reach the mirror (e.g. https://mirror.example:5000)', 'config');
}

function configCommand(config: Config, runtime: string, o: Partial<ClientConfigOptions> & { out?: string }): number {
  if (o.mirrorUrl === undefined) throw new UsageError('config needs --mirror-url URL: where clients reach the mirror (e.g. https://mirror.example:5000)', 'config');
  let generated;
  try {
    generated = clientConfig(config, runtime as Runtime, { mirrorUrl: o.mirrorUrl, noFallback: o.noFallback === true, digestOnly: o.digestOnly === true, defaultHost: o.defaultHost === true, ...(o.ca === undefined ? {} : { ca: o.ca }), ...(o.namespace === undefined ? {} : { namespace: o.namespace }), ...(o.credentials === undefined ? {} : { credentials: o.credentials }) });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  // stdout carries exactly what the runtime reads (`> daemon.json` works); what it is and where it
  // goes, and the notes, go to stderr.
  const files = generated.files;
  if (o.out !== undefined) {
    for (const f of files) {
      const target = join(o.out, f.path);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, f.content);
      process.stderr.write(`wrote ${target}  (install to ${f.installTo})\n`);
    }
  } else if (files.length === 1 || runtime === 'openshift') {
    // One file, or YAML documents (OpenShift: oc apply -f - takes them as one stream).
    for (const f of files) process.stderr.write(`${f.path}: install to ${f.installTo}\n`);
    process.stdout.write(files.map((f) => f.content).join('---\n'));
  } else {
    // Several files (containerd: one hosts.toml per registry) cannot be one file: each is shown
    // under a TOML comment naming it; --out DIR writes them where they go.
    process.stderr.write(`${files.length} files: use --out DIR to write them; shown here one after another\n`);
    for (const f of files) process.stdout.write(`# ==> ${f.path}  (install to ${f.installTo})\n${f.content}\n`);
  }
  for (const n of generated.notes) process.stderr.write(`note: ${n}\n`);
  return 0;
}

const str = (v: OptionValues[string]): string | undefined => (typeof v === 'string' ? v : undefined);

async function main(argv: string[]): Promise<number> {
  let line;
  try {
    line = parseCommandLine(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`regmirror: ${e.message}\n${e.command === undefined ? `\n${overviewUsage()}` : `run 'regmirror help ${e.command}' for its usage\n`}`);
    return 2;
  }
  if (line.kind === 'version') {
    process.stdout.write(`regmirror ${packageVersion()}\n`);
    return 0;
  }
  if (line.kind === 'overview') {
    process.stdout.write(overviewUsage());
    return 0;
  }
  if (line.kind === 'help') {
    process.stdout.write(commandUsage(line.command));
    return 0;
  }
  const { command, args, values } = line;
  const name = command.name;
  try {
    const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new UsageError('--concurrency must be a whole number from 1 to 64', name);
    if (name === 'export' && values.output === undefined) throw new UsageError('export needs -o FILE (the bundle to write)', name);
    if (name === 'config') checkConfigOptions(args[0] ?? '', values);
    const config = loadOrExplain(str(values.config));
    if (config === undefined) return 2;
    if (name === 'serve') return await serveCommand(config, str(values.config) ?? process.env.REGMIRROR_CONFIG, str(values['log-level']));
    if (name === 'config') {
      const mirrorUrl = str(values['mirror-url']);
      const ca = str(values.ca);
      const out = str(values.out);
      const namespace = str(values.namespace);
      const credentials = str(values.credentials);
      return configCommand(config, args[0] ?? '', {
        ...(mirrorUrl === undefined ? {} : { mirrorUrl }),
        ...(ca === undefined ? {} : { ca }),
        ...(out === undefined ? {} : { out }),
        ...(namespace === undefined ? {} : { namespace }),
        ...(credentials === undefined ? {} : { credentials }),
        noFallback: values['no-fallback'] === true,
        digestOnly: values['digest-only'] === true,
        defaultHost: values.default === true,
      });
    }
    if (name.startsWith('cache ')) {
      const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level);
      try {
        return await cacheAction(name.slice(6), config, log, args[0] ?? '', { json: values.json === true, dryRun: values['dry-run'] === true, repair: values.repair === true, ...(str(values.registry) === undefined ? {} : { registry: str(values.registry) as string }) });
      } catch (e) {
        if (!(e instanceof RegistryError)) throw e;
        process.stderr.write(`regmirror: ${e.message}
`);
        return 2;
      }
    }
    if (name === 'seed' || name === 'export' || name === 'import') {
      const platforms = (Array.isArray(values.platform) ? values.platform : []).flatMap((p) => p.split(',')).map((p) => p.trim()).filter((p) => p !== '');
      return await cacheCommand(name, config, args[0] ?? '', { json: values.json === true, platforms, concurrency, output: str(values.output), pin: values.pin === true });
    }
    const image = args[0] ?? '';
    const mirror = (str(values.mirror) ?? defaultMirrorUrl(config)).replace(/\/+$/, '');
    try {
      if (name === 'verify') return await verifyCommand(config, image, { local: values.local === true, json: values.json === true, mirror });
      return await inspectCommand(image, { json: values.json === true, mirror });
    } catch (e) {
      process.stderr.write(`regmirror: ${e instanceof RegistryError ? e.message : (e as Error).message}\n`);
      return e instanceof RegistryError ? 2 : 3;
    }
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`regmirror: ${e.message}\nrun 'regmirror help ${e.command ?? name}' for its usage\n`);
    return 2;
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
