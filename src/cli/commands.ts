/**
 * The command table: one entry per command with its arguments, its own options, a one-line
 * summary and an example. `regmirror <cmd> --help` and `regmirror help <cmd>` print the entry; an
 * option that is not the command's is an error naming it (parseCommandLine).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

type OptionSpec = { type: 'string' | 'boolean'; short?: string; multiple?: boolean; value?: string; help: string };

/** Options every command takes. */
const GLOBAL: Record<string, OptionSpec> = {
  config: { type: 'string', short: 'c', value: 'FILE', help: 'mirror.toml (default: $REGMIRROR_CONFIG, else the embedded default: listen 127.0.0.1:5000, data in ./data, Docker Hub + gcr.io, ghcr.io, quay.io, registry.k8s.io mirrored anonymously)' },
  help: { type: 'boolean', short: 'h', help: 'this command\'s usage' },
};

const JSON_OPT: OptionSpec = { type: 'boolean', help: 'machine-readable output' };
const MIRROR_OPT: OptionSpec = { type: 'string', short: 'm', value: 'URL', help: 'where the mirror answers (default: from server.listen)' };

export interface CommandSpec {
  name: string;
  /** Positional arguments, as shown in the usage line; their count is enforced. */
  args: string[];
  summary: string;
  /** More lines of explanation under the summary. */
  details?: string;
  options: Record<string, OptionSpec>;
  example: string;
}

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'serve',
    args: [],
    summary: 'run the mirror (the default command)',
    details: 'Listens on [server] listen. SIGTERM / SIGINT drain it: /readyz fails, the listener closes after\n[server] shutdown_delay, in-flight transfers get [server] shutdown_timeout (a second signal exits at once).\nSIGHUP reloads the config file (a file that does not validate changes nothing).',
    options: {
      'log-level': { type: 'string', value: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent (overrides [log] level and LOG_LEVEL)' },
    },
    example: 'regmirror serve --config /etc/regmirror/mirror.toml',
  },
  {
    name: 'verify',
    args: ['IMAGE'],
    summary: "compare IMAGE's repo digest through the mirror with the upstream's",
    details: 'MATCH exits 0, MISMATCH 1, a side that cannot be resolved 3. With --local, re-hash the cached\nmanifest(s) and blobs of IMAGE instead; corruption exits 1.',
    options: {
      local: { type: 'boolean', help: 'verify the cache on disk instead of comparing with the upstream' },
      json: JSON_OPT,
      mirror: MIRROR_OPT,
    },
    example: 'regmirror verify gcr.io/distroless/static:nonroot',
  },
  {
    name: 'inspect',
    args: ['IMAGE'],
    summary: "show IMAGE's repo digests and cache state (like crictl inspecti)",
    options: { json: JSON_OPT, mirror: MIRROR_OPT },
    example: 'regmirror inspect nginx:1.27 --json',
  },
  {
    name: 'seed',
    args: ['LIST'],
    summary: 'pull every image in LIST through the cache; exits 1 when any image failed',
    details: 'LIST is a file (or - for stdin): one image reference per line, # comments.',
    options: {
      platform: { type: 'string', multiple: true, value: 'P', help: 'only these platforms of an index (os/arch[/variant]; repeat or separate with commas); default every platform' },
      concurrency: { type: 'string', value: 'N', help: 'images pulled at once, 1 to 64 (default 4)' },
      pin: { type: 'boolean', help: 'pin every seeded image (the byte budget keeps it; regmirror cache unpin)' },
      json: JSON_OPT,
    },
    example: 'regmirror seed images.txt --platform linux/amd64',
  },
  {
    name: 'export',
    args: ['LIST'],
    summary: 'write the cached images in LIST to an OCI-layout tar bundle for an air-gapped site',
    details: 'FILE ending in .tar.gz or .tgz is compressed. Seed the images first.',
    options: {
      output: { type: 'string', short: 'o', value: 'FILE', help: 'the bundle to write (required)' },
      json: JSON_OPT,
    },
    example: 'regmirror export images.txt -o site-bundle.tar.gz',
  },
  {
    name: 'import',
    args: ['FILE'],
    summary: 'verify every digest of a bundle, then add its images to the cache',
    details: 'Safe beside a running server: it sees the new images and tags at its next request.',
    options: { json: JSON_OPT },
    example: 'regmirror import site-bundle.tar.gz --config /etc/regmirror/mirror.toml',
  },
  {
    name: 'config',
    args: ['RUNTIME'],
    summary: 'print (or --out DIR: write) the client configuration that points RUNTIME at this mirror',
    details: 'RUNTIME: containerd, docker, registries-conf, gdc, openshift.',
    options: {
      'mirror-url': { type: 'string', value: 'URL', help: 'where clients reach the mirror (https://mirror.example:5000); required' },
      ca: { type: 'string', value: 'FILE', help: "the mirror's CA certificate path on the client machines" },
      out: { type: 'string', value: 'DIR', help: 'write the files under DIR instead of printing them' },
      'no-fallback': { type: 'boolean', help: 'containerd, openshift: never fall back to the real registry' },
      'digest-only': { type: 'boolean', help: 'registries-conf: mirror-by-digest-only' },
      default: { type: 'boolean', help: 'containerd: also write certs.d/_default/hosts.toml' },
      namespace: { type: 'string', value: 'NAME', help: 'containerd, gdc: use the endpoint URL/v2/NAME of that [[namespace]]' },
      credentials: { type: 'string', value: 'FILE', help: 'gdc: pullCredentialConfigPath' },
    },
    example: 'regmirror config containerd --mirror-url https://mirror.example:5000 --out /etc/containerd',
  },
  {
    name: 'cache ls',
    args: [],
    summary: 'list the cached images, least recently used first: digest, bytes (own / with shared), last use, pinned',
    options: { registry: { type: 'string', value: 'HOST', help: 'only images of this registry (or local namespace)' }, json: JSON_OPT },
    example: 'regmirror cache ls --registry gcr.io',
  },
  {
    name: 'cache du',
    args: [],
    summary: 'bytes in the cache, in total and by registry',
    options: { json: JSON_OPT },
    example: 'regmirror cache du',
  },
  {
    name: 'cache rm',
    args: ['IMAGE'],
    summary: 'remove IMAGE from the cache (blobs other images hold stay); the next pull fetches it again',
    details: 'Safe beside a running server: it answers from the upstream at its next request.',
    options: { json: JSON_OPT },
    example: 'regmirror cache rm gcr.io/distroless/static:nonroot',
  },
  {
    name: 'cache pin',
    args: ['IMAGE'],
    summary: 'keep IMAGE whatever the byte budget needs (a tag: what it points at now and after it moves)',
    details: 'The digest a pinned tag pointed at before it moved stays pinned for 24 hours.',
    options: {},
    example: 'regmirror cache pin registry.k8s.io/pause:3.10',
  },
  {
    name: 'cache unpin',
    args: ['IMAGE'],
    summary: 'remove the pin of IMAGE (pins from [cache] pins come back at the next start)',
    options: {},
    example: 'regmirror cache unpin registry.k8s.io/pause:3.10',
  },
  {
    name: 'cache gc',
    args: [],
    summary: 'remove blobs no cached manifest references, rows whose bytes are missing, and stray files',
    details: 'Content younger than [cache] evict_grace stays (a push uploads its blobs before its manifest).',
    options: { 'dry-run': { type: 'boolean', help: 'report what would be removed, remove nothing' }, json: JSON_OPT },
    example: 'regmirror cache gc --dry-run',
  },
  {
    name: 'cache verify',
    args: [],
    summary: 're-hash every cached manifest and blob; exits 1 when any is corrupt or missing',
    options: { repair: { type: 'boolean', help: 'quarantine corrupt files (data_dir/quarantine/) and forget them, so the next pull fetches them again' }, json: JSON_OPT },
    example: 'regmirror cache verify --repair',
  },
  {
    name: 'help',
    args: ['[COMMAND]'],
    summary: "print a command's usage (or the list of commands)",
    options: {},
    example: 'regmirror help export',
  },
];

/** Which RUNTIMEs each `config` option applies to (an option given for another runtime is an error). */
export const CONFIG_OPTION_RUNTIMES: Readonly<Record<string, readonly string[]>> = {
  'no-fallback': ['containerd', 'openshift'],
  'digest-only': ['registries-conf'],
  default: ['containerd'],
  namespace: ['containerd', 'gdc'],
  credentials: ['gdc'],
};

const CACHE_ACTIONS = COMMANDS.filter((c) => c.name.startsWith('cache ')).map((c) => c.name.slice(6));

/** `regmirror help cache`: the actions, each with its summary. */
const CACHE_HELP: CommandSpec = {
  name: 'cache',
  args: ['ACTION'],
  summary: 'look after the cache on disk, beside a running server or not',
  details: COMMANDS.filter((c) => c.name.startsWith('cache ')).map((c) => `${`${c.name.slice(6)} ${c.args.join(' ')}`.padEnd(14)}${c.summary}`).join('\n'),
  options: {},
  example: 'regmirror help cache gc',
};
const COMMAND_NAMES = [...new Set(COMMANDS.map((c) => c.name.split(' ')[0] ?? c.name))];

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** Wraps `text` to lines of at most `width` characters, the first after `lead`, the rest indented like it. */
function wrap(lead: string, text: string, width = 100): string[] {
  const lines: string[] = [];
  let cur = lead;
  for (const word of text.split(' ')) {
    if (cur.length + word.length + 1 > width && cur.trim() !== '' && cur.length > lead.length) {
      lines.push(cur);
      cur = ' '.repeat(lead.length);
    }
    cur += cur.length === lead.length || cur.endsWith(' ') ? word : ` ${word}`;
  }
  lines.push(cur);
  return lines;
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).flatMap(([name, o]) => {
    const flag = `${o.short === undefined ? '    ' : `-${o.short}, `}--${name}${o.value === undefined ? '' : ` ${o.value}`}`;
    return wrap(`  ${flag.padEnd(26)}`, o.help);
  });
}

/** The overview: every command with its summary. */
export function overviewUsage(): string {
  const lines = ['Usage: regmirror <command> [options]', '', 'Commands:'];
  for (const c of COMMANDS) lines.push(`  ${`${c.name} ${c.args.join(' ')}`.padEnd(22)}${c.summary}`);
  lines.push('', 'Options of every command:', ...optionLines(GLOBAL), '  -v, --version             print the version', '');
  lines.push("Run 'regmirror help <command>' (or 'regmirror <command> --help') for a command's own options.");
  lines.push('IMAGE is a reference as the runtime writes it: gcr.io/foo/bar:1.0, nginx, quay.io/x/y@sha256:...', '');
  lines.push('Exit codes: 0 ok, 1 mismatch / corruption / failure, 2 usage or configuration error, 3 an image could not be resolved.', '');
  return lines.join('\n');
}

/** One command's usage, options and example. */
export function commandUsage(c: CommandSpec): string {
  const lines = [`Usage: regmirror ${[c.name, ...c.args].join(' ')} [options]`, '', `${c.summary[0]?.toUpperCase() ?? ''}${c.summary.slice(1)}.`];
  if (c.details !== undefined) lines.push(c.details);
  const own = optionLines(c.options);
  if (own.length > 0) lines.push('', 'Options:', ...own);
  lines.push('', 'Options of every command:', ...optionLines(GLOBAL), '', 'Example:', `  ${c.example}`, '');
  return lines.join('\n');
}

export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to point at. */
    readonly command?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export type CommandLine =
  | { kind: 'version' }
  | { kind: 'overview' }
  | { kind: 'help'; command: CommandSpec }
  | { kind: 'run'; command: CommandSpec; args: string[]; values: OptionValues };

/**
 * Parses argv: the first word that is not an option (or the value of --config) names the command
 * (serve when none). Throws UsageError for an unknown command, an option the command does not
 * take (naming both), a missing option value, or the wrong number of arguments.
 */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const globalConfig = { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' } } as const;
  const first = parseArgs({ args: [...argv], options: globalConfig, strict: false, allowPositionals: true, tokens: true });
  const commandToken = first.tokens.find((t) => t.kind === 'positional');
  const name = commandToken?.kind === 'positional' ? commandToken.value : undefined;
  if (name === undefined) {
    if (first.values.version === true) return { kind: 'version' };
    if (first.values.help === true) return { kind: 'overview' };
  }
  // `cache ACTION`: the command is the two words.
  const actionToken = name === 'cache' ? first.tokens.find((t) => t.kind === 'positional' && t.index > (commandToken?.index ?? 0)) : undefined;
  const fullName = name === 'cache' ? `cache ${actionToken?.kind === 'positional' ? actionToken.value : ''}` : name;
  const command = findCommand(fullName ?? 'serve');
  if (command === undefined && name === 'cache') throw new UsageError(`unknown cache action "${fullName?.slice(6) ?? ''}": use one of ${CACHE_ACTIONS.join(', ')}`);
  if (command === undefined) throw new UsageError(`unknown command "${name ?? ''}": the commands are ${COMMAND_NAMES.join(', ')}`);
  const rest = commandToken === undefined ? [...argv] : argv.filter((_, i) => i !== commandToken.index && i !== actionToken?.index);
  const options: ParseArgsConfig['options'] = { version: { type: 'boolean', short: 'v' } };
  for (const [k, o] of Object.entries({ ...GLOBAL, ...command.options })) {
    options[k] = { type: o.type, ...(o.short === undefined ? {} : { short: o.short }), ...(o.multiple === true ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
  } catch (e) {
    const err = e as Error & { code?: string };
    const opt = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1];
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && opt !== undefined) {
      const owners = COMMANDS.filter((c) => Object.entries(c.options).some(([k, o]) => `--${k}` === opt || (o.short !== undefined && `-${o.short}` === opt))).map((c) => c.name);
      throw new UsageError(`${opt} is not an option of ${command.name}${owners.length === 0 ? '' : ` (it belongs to ${owners.join(', ')})`}`, command.name);
    }
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new UsageError(`${err.message.replace(/\.$/, '')} (see regmirror help ${command.name})`, command.name);
    throw new UsageError(err.message, command.name);
  }
  const values = parsed.values as OptionValues;
  if (values.help === true) return { kind: 'help', command };
  if (values.version === true) return { kind: 'version' };
  if (command.name === 'help') {
    const target = parsed.positionals[0] === 'cache' && parsed.positionals[1] !== undefined ? `cache ${parsed.positionals[1]}` : parsed.positionals[0];
    if (target === undefined) return { kind: 'overview' };
    if (target === 'cache') return { kind: 'help', command: CACHE_HELP };
    const c = findCommand(target);
    if (c === undefined) throw new UsageError(`unknown command "${target}": the commands are ${COMMANDS.map((x) => x.name).join(', ')}`);
    if (parsed.positionals.length > target.split(' ').length) throw new UsageError('help takes at most one COMMAND', 'help');
    return { kind: 'help', command: c };
  }
  if (parsed.positionals.length !== command.args.length) {
    const want = command.args.length === 0 ? 'no arguments' : `${command.args.join(' ')}`;
    throw new UsageError(`${command.name} takes ${want}${parsed.positionals.length > command.args.length ? `, not "${parsed.positionals.slice(command.args.length).join(' ')}"` : ''}`, command.name);
  }
  return { kind: 'run', command, args: parsed.positionals, values };
}
