/**
 * The production install and the packaging, each checked with the real tool where there is one:
 *  - a copy of the repository's files, `npm ci --omit=dev` (offline, from the npm cache the test
 *    command's own `npm ci` filled), then `node bin/regmirror.js serve` answers /v2/ with no tsx,
 *    no devDependency installed and nothing compiled at start; `npm start` does not rebuild;
 *  - `systemd-analyze verify` on the systemd unit, and the directives an operator relies on;
 *  - the Kubernetes manifests: every document parses, probes and ServiceMonitors point at the
 *    health and metrics endpoints on the ports the embedded mirror.toml listens on, and that
 *    mirror.toml (and the container image's) validates;
 *  - the Dockerfile copies only files that exist and checks /readyz.
 * The container image itself runs under containerd in test/runtime/container-image.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ROOT } from '../helpers/mirror-process.ts';
import { freePort, waitFor } from '../helpers/net.ts';
import { parseConfigText } from '../../src/config/index.ts';

const run = promisify(execFile);
const PKG = join(ROOT, 'packaging');

describe('production install and packaging', { timeout: 900_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'regmirror-pkg-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  test('a fresh copy: npm ci --omit=dev, then serve answers /v2/ without tsx or a compile at start; npm start does not rebuild', async () => {
    const app = join(work, 'app');
    // The repository's own files (what a clone holds), not dist/ or node_modules.
    for (const f of execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter((x) => x !== '' && existsSync(join(ROOT, x)))) {
      mkdirSync(dirname(join(app, f)), { recursive: true });
      cpSync(join(ROOT, f), join(app, f));
    }
    assert.equal(existsSync(join(app, 'dist')), false);
    await run('npm', ['ci', '--omit=dev', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, timeout: 600_000, env: { ...process.env, CI: 'true' } }).catch((e: { stderr?: string; message: string }) => {
      throw new Error(`npm ci --omit=dev failed: ${e.stderr ?? e.message}`);
    });
    assert.ok(existsSync(join(app, 'dist/cli/main.js')), 'prepare built dist/');
    for (const dev of ['tsx', 'esbuild', '@types/node', 'yaml']) assert.equal(existsSync(join(app, 'node_modules', dev)), false, `${dev} is not installed in production`);
    const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    assert.equal(pkg.dependencies.tsx, undefined);
    assert.ok(pkg.devDependencies.tsx !== undefined);

    const port = await freePort();
    const toml = join(app, 'prod.toml');
    execFileSync('sh', ['-c', `printf 'default_registry = ""\\n[server]\\nlisten = "127.0.0.1:${port}"\\ndata_dir = "data"\\nwarm_up = false\\n' > ${toml}`]);
    const child = spawn(process.execPath, ['bin/regmirror.js', 'serve', '--config', toml], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    try {
      await waitFor('the production install to serve /v2/', async () => (await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.status, () => 0)) === 200, 30_000, 100).catch((e: Error) => {
        throw new Error(`${e.message}: ${out}`);
      });
      assert.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('close', r));
    }
    assert.equal(out.includes('building dist/'), false);
    // `npm start`'s build step: nothing to do on a current build (and it says nothing).
    const before = readdirSync(join(app, 'dist/cli')).map((f) => `${f}`);
    const { stderr } = await run(process.execPath, ['scripts/build-if-stale.mjs'], { cwd: app, timeout: 60_000 });
    assert.equal(stderr, '');
    assert.deepEqual(readdirSync(join(app, 'dist/cli')), before);
    // The tarball npm pack makes carries what serve needs.
    const { stdout: packed } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: app, timeout: 120_000 });
    const files = (JSON.parse(packed) as Array<{ files: Array<{ path: string }> }>)[0]?.files.map((f) => f.path) ?? [];
    for (const f of ['bin/regmirror.js', 'dist/cli/main.js', 'dist/server/app.js', 'config/default.toml', 'LICENSE', 'package.json']) assert.ok(files.includes(f), `npm pack carries ${f}`);
    assert.equal(files.some((f) => f.startsWith('src/') || f.startsWith('test/')), false);
  });

  test('the systemd unit passes systemd-analyze verify and has the directives an operator relies on', async () => {
    const unit = join(PKG, 'systemd/regmirror.service');
    const r = await run('systemd-analyze', ['verify', unit], { timeout: 60_000 }).catch((e: { stderr?: string; code?: number }) => ({ stdout: '', stderr: `exit ${e.code ?? '?'}: ${e.stderr ?? ''}` }));
    assert.equal(r.stderr, '', 'systemd-analyze verify prints nothing for a clean unit');
    const text = readFileSync(unit, 'utf8');
    for (const line of ['User=regmirror', 'ProtectSystem=strict', 'ReadWritePaths=/var/lib/regmirror', 'StateDirectory=regmirror', 'LimitNOFILE=65536', 'ExecReload=/bin/kill -HUP $MAINPID', 'Restart=on-failure', 'NoNewPrivileges=yes']) {
      assert.match(text, new RegExp(`^${line.replace(/[$]/g, '\\$')}$`, 'm'), line);
    }
    assert.match(text, /^ExecStart=\/usr\/bin\/node --max-semi-space-size=4 \/opt\/regmirror\/bin\/regmirror\.js serve --config \/etc\/regmirror\/mirror\.toml$/m);
    assert.match(readFileSync(join(PKG, 'systemd/regmirror.sysusers'), 'utf8'), /^u regmirror - /m);
  });

  test('Kubernetes manifests: documents parse, probes on /livez and /readyz, metrics scraped, the ConfigMaps\' mirror.toml validates', () => {
    for (const variant of ['cluster', 'node-local']) {
      const dir = join(PKG, 'kubernetes', variant);
      const kustomization = parseAllDocuments(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'))[0]?.toJS() as { resources: string[] };
      const docs = kustomization.resources.flatMap((r) => parseAllDocuments(readFileSync(join(dir, r), 'utf8')).map((d) => {
        assert.deepEqual(d.errors, [], `${variant}/${r}`);
        return d.toJS() as { kind: string; spec?: Record<string, unknown>; data?: Record<string, string> };
      }));
      const kinds = docs.map((d) => d.kind).sort();
      const workload = docs.find((d) => d.kind === (variant === 'cluster' ? 'Deployment' : 'DaemonSet'));
      assert.ok(workload !== undefined, `${variant}: ${kinds.join(', ')}`);
      assert.ok(kinds.includes('Service') && kinds.includes('ConfigMap') && kinds.includes('ServiceMonitor'), kinds.join(', '));
      if (variant === 'cluster') assert.ok(kinds.includes('PersistentVolumeClaim'));
      type Container = { name: string; ports: Array<{ name: string; containerPort: number }>; livenessProbe: { httpGet: { path: string; port: string } }; readinessProbe: { httpGet: { path: string; port: string } } };
      const spec = workload.spec as { template: { spec: { containers: Container[]; terminationGracePeriodSeconds: number } } };
      const c = spec.template.spec.containers[0] as Container;
      assert.equal(c.livenessProbe.httpGet.path, '/livez');
      assert.equal(c.readinessProbe.httpGet.path, '/readyz');
      const probePort = c.ports.find((p) => p.name === c.readinessProbe.httpGet.port)?.containerPort;
      const toml = Object.values(docs.find((d) => d.kind === 'ConfigMap')?.data ?? {})[0] ?? '';
      const config = parseConfigText(toml, work, {});
      // The probes reach a listener that serves /readyz on every address of the pod.
      const healthListen = variant === 'cluster' ? config.server.listen : config.api.listen;
      assert.equal(healthListen?.port, probePort, `${variant}: the probes' port is the one mirror.toml serves health on`);
      assert.equal(healthListen?.host, '0.0.0.0');
      if (variant === 'node-local') assert.equal(config.server.listen.host, '127.0.0.1', 'the node-local registry API stays on the node\'s loopback');
      // SIGTERM: the grace period covers shutdown_delay + shutdown_timeout.
      assert.ok(spec.template.spec.terminationGracePeriodSeconds * 1000 > config.server.shutdownDelayMs + config.server.shutdownTimeoutMs);
      const monitor = docs.find((d) => d.kind === 'ServiceMonitor')?.spec as { endpoints: Array<{ path: string }> };
      assert.equal(monitor.endpoints[0]?.path, '/metrics');
    }
  });

  test('the container image: its mirror.toml validates; the Dockerfile copies files that exist, runs as non-root and checks /readyz', () => {
    const config = parseConfigText(readFileSync(join(PKG, 'container/mirror.toml'), 'utf8'), work, {});
    assert.equal(config.server.dataDir, '/var/lib/regmirror');
    const dockerfile = readFileSync(join(PKG, 'container/Dockerfile'), 'utf8');
    for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const src of (m[1] ?? '').split(' ')) assert.ok(existsSync(join(ROOT, src)), `COPY ${src}`);
    }
    assert.match(dockerfile, /^FROM node:20-bookworm-slim/m);
    assert.match(dockerfile, /^USER node$/m);
    assert.match(dockerfile, /^VOLUME \/var\/lib\/regmirror$/m);
    assert.match(dockerfile, /^HEALTHCHECK .*\/readyz/m);
    assert.match(dockerfile, /npm ci --omit=dev/);
  });
});
