import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COMMANDS, UsageError, commandUsage, parseCommandLine } from '../../src/cli/commands.ts';

test('the first word names the command; serve when there is none; --config may come first', () => {
  const a = parseCommandLine(['seed', 'list.txt', '--platform', 'linux/amd64', '--platform', 'linux/arm64']);
  assert.equal(a.kind, 'run');
  assert.ok(a.kind === 'run');
  assert.equal(a.command.name, 'seed');
  assert.deepEqual(a.args, ['list.txt']);
  assert.deepEqual(a.values.platform, ['linux/amd64', 'linux/arm64']);
  const b = parseCommandLine(['-c', 'mirror.toml']);
  assert.ok(b.kind === 'run');
  assert.equal(b.command.name, 'serve');
  assert.equal(b.values.config, 'mirror.toml');
  const c = parseCommandLine(['--config', 'm.toml', 'import', 'b.tar']);
  assert.ok(c.kind === 'run');
  assert.equal(c.command.name, 'import');
  assert.deepEqual(c.args, ['b.tar']);
});

test('help: <cmd> --help, help <cmd>, --help alone, --version', () => {
  const h = parseCommandLine(['seed', '--help']);
  assert.ok(h.kind === 'help');
  assert.equal(h.command.name, 'seed');
  const e = parseCommandLine(['help', 'export']);
  assert.ok(e.kind === 'help');
  assert.equal(e.command.name, 'export');
  assert.equal(parseCommandLine(['--help']).kind, 'overview');
  assert.equal(parseCommandLine(['help']).kind, 'overview');
  assert.equal(parseCommandLine(['--version']).kind, 'version');
  assert.equal(parseCommandLine(['-v']).kind, 'version');
});

test("an option of another command is refused naming the option, the command and the option's owners", () => {
  assert.throws(() => parseCommandLine(['serve', '--json']), (e: unknown) => e instanceof UsageError && e.command === 'serve' && /--json is not an option of serve \(it belongs to verify, inspect, seed, export, import, cache ls, cache du, cache rm, cache gc, cache verify\)/.test(e.message));
  assert.throws(() => parseCommandLine(['import', 'b.tar', '--platform', 'x']), /--platform is not an option of import \(it belongs to seed\)/);
  assert.throws(() => parseCommandLine(['seed', 'l', '--bogus']), /--bogus is not an option of seed$/);
  assert.throws(() => parseCommandLine(['export', 'l', '-o']), (e: unknown) => e instanceof UsageError && e.command === 'export');
});

test('the number of arguments is checked; unknown commands are named', () => {
  assert.throws(() => parseCommandLine(['verify']), /verify takes IMAGE/);
  assert.throws(() => parseCommandLine(['serve', 'extra']), /serve takes no arguments, not "extra"/);
  assert.throws(() => parseCommandLine(['frobnicate']), /unknown command "frobnicate": the commands are serve, verify/);
  assert.throws(() => parseCommandLine(['help', 'frobnicate']), /unknown command "frobnicate"/);
});

test("every command's usage shows its own options and an example, and no other command's", () => {
  for (const c of COMMANDS) {
    const u = commandUsage(c);
    assert.match(u, new RegExp(`^Usage: regmirror ${c.name}`));
    assert.match(u, /Example:\n {2}regmirror /);
    for (const name of Object.keys(c.options)) assert.ok(u.includes(`--${name}`), `${c.name} shows --${name}`);
    for (const other of COMMANDS) {
      for (const name of Object.keys(other.options)) {
        if (!(name in c.options)) assert.ok(!u.includes(`--${name} `) && !u.includes(`--${name}\n`), `${c.name} does not show --${name} of ${other.name}`);
      }
    }
  }
});

test('cache ACTION: two words name the command, their options only, help cache lists the actions', () => {
  const ls = parseCommandLine(['cache', 'ls', '--registry', 'gcr.io']);
  assert.ok(ls.kind === 'run' && ls.command.name === 'cache ls' && ls.values.registry === 'gcr.io');
  const rm = parseCommandLine(['cache', 'rm', 'gcr.io/a/b:1']);
  assert.ok(rm.kind === 'run' && rm.command.name === 'cache rm' && rm.args[0] === 'gcr.io/a/b:1');
  assert.throws(() => parseCommandLine(['cache', 'nope']), /unknown cache action "nope": use one of ls, du, rm, pin, unpin, gc, verify/);
  assert.throws(() => parseCommandLine(['cache', 'ls', '--repair']), /--repair is not an option of cache ls \(it belongs to cache verify\)/);
  assert.throws(() => parseCommandLine(['cache', 'rm']), /cache rm takes IMAGE/);
  const help = parseCommandLine(['help', 'cache']);
  assert.ok(help.kind === 'help' && help.command.name === 'cache');
  assert.match(commandUsage(help.command), /gc +remove blobs no cached manifest references/);
  const helpGc = parseCommandLine(['help', 'cache', 'gc']);
  assert.ok(helpGc.kind === 'help' && helpGc.command.name === 'cache gc');
});
