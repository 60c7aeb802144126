/**
 * `regmirror config RUNTIME`: the exact client configuration that points a runtime at this mirror,
 * for every registry mirror.toml mirrors. The request shapes these files make clients send are the
 * ones the router serves (DESIGN §1, §9); the runtime tests pull through each of them.
 *
 *   containerd       certs.d/<registry>/hosts.toml (+ _default, + namespace endpoint form) and
 *                    the config_path line for containerd's own config
 *   docker           daemon.json registry-mirrors (Docker Hub only)
 *   registries-conf  [[registry]] / [[registry.mirror]] for CRI-O, podman, skopeo
 *   gdc              registryMirrors block of a GDC / Anthos bare-metal cluster config
 *   openshift        ImageDigestMirrorSet, ImageTagMirrorSet, ImageContentSourcePolicy
 */
import { DOCKER_HUB, DOCKER_HUB_ENDPOINT } from '../config/docker-hub.ts';
import type { Config } from '../config/index.ts';

export const RUNTIMES = ['containerd', 'docker', 'registries-conf', 'gdc', 'openshift'] as const;
export type Runtime = (typeof RUNTIMES)[number];

export interface ClientConfigOptions {
  /** Where clients reach the mirror: http(s)://host:port, no path. */
  mirrorUrl: string;
  /** The mirror's CA certificate as the client machine will have it (a path there). */
  ca?: string;
  /** containerd / openshift: never fall back to the real registry (air-gapped sites). */
  noFallback: boolean;
  /** registries-conf: only digest pulls use the mirror (mirror-by-digest-only). */
  digestOnly: boolean;
  /** containerd: also write certs.d/_default/hosts.toml (every other registry through the mirror). */
  defaultHost: boolean;
  /** containerd / gdc: use the namespace endpoint https://mirror/v2/<namespace> of this [[namespace]]. */
  namespace?: string;
  /** gdc: pullCredentialConfigPath for the mirror, if it needs credentials. */
  credentials?: string;
}

export interface GeneratedFile {
  /** Relative path under --out. */
  path: string;
  content: string;
  /** Where the file goes on a client machine. */
  installTo: string;
}

export interface ClientConfig {
  files: GeneratedFile[];
  /** Warnings and next steps for the person installing it. */
  notes: string[];
}

/** Checks and normalises --mirror-url. Throws with a message naming the flag. */
export function parseMirrorUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`--mirror-url "${raw}" is not a URL (e.g. https://mirror.example:5000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`--mirror-url must be http:// or https://, not ${u.protocol}`);
  if (u.pathname !== '/' || u.search !== '' || u.hash !== '' || u.username !== '') {
    throw new Error('--mirror-url is the mirror\'s scheme, host and port only (use --namespace for a /v2/<namespace> endpoint)');
  }
  return u;
}

const q = (s: string): string => JSON.stringify(s); // a TOML basic string and a YAML double-quoted scalar alike

/** The real registry's endpoint, as the runtime would reach it without the mirror. */
function serverOf(host: string): string {
  return host === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : `https://${host}`;
}

function mirroredHosts(config: Config, namespace?: string): string[] {
  if (namespace !== undefined) {
    const ns = config.namespaces.find((n) => n.name === namespace);
    if (ns === undefined) throw new Error(`--namespace ${namespace}: no such [[namespace]] in the configuration (${config.namespaces.map((n) => n.name).join(', ') || 'none'})`);
    if (ns.registry === undefined) throw new Error(`--namespace ${namespace} is a local namespace (push/import only); name one with a registry`);
    return [ns.registry];
  }
  return config.registries.map((r) => r.host);
}

function containerd(config: Config, o: ClientConfigOptions, base: string): ClientConfig {
  const files: GeneratedFile[] = [];
  const hostBlock = (url: string, overridePath: boolean): string =>
    [`[host.${q(url)}]`, '  capabilities = ["pull", "resolve"]', ...(o.ca === undefined ? [] : [`  ca = ${q(o.ca)}`]), ...(overridePath ? ['  override_path = true'] : [])].join('\n');
  const endpoint = o.namespace === undefined ? base : `${base}/v2/${o.namespace}`;
  for (const host of mirroredHosts(config, o.namespace)) {
    const server = o.noFallback ? endpoint : serverOf(host);
    const lines = [
      `# ${host} through regmirror (${base})${o.noFallback ? '; no fallback to the registry itself' : `; falls back to ${serverOf(host)} when the mirror fails`}`,
      `server = ${q(server)}`,
      '',
      hostBlock(endpoint, o.namespace !== undefined),
      '',
    ];
    files.push({ path: `certs.d/${host}/hosts.toml`, content: lines.join('\n'), installTo: `/etc/containerd/certs.d/${host}/hosts.toml` });
  }
  if (o.defaultHost) {
    files.push({
      path: 'certs.d/_default/hosts.toml',
      content: [`# every registry without its own folder here goes through regmirror (${base}); it must be configured there`, '', hostBlock(base, false), ''].join('\n'),
      installTo: '/etc/containerd/certs.d/_default/hosts.toml',
    });
  }
  files.push({
    path: 'containerd-config-snippet.toml',
    content: [
      '# Add to /etc/containerd/config.toml (then: systemctl restart containerd).',
      '# containerd 1.6 / 1.7 (config version 2):',
      '[plugins."io.containerd.grpc.v1.cri".registry]',
      '  config_path = "/etc/containerd/certs.d"',
      '',
      '# containerd 2.x (config version 3) uses instead:',
      '# [plugins."io.containerd.cri.v1.images".registry]',
      '#   config_path = "/etc/containerd/certs.d"',
      '',
    ].join('\n'),
    installTo: '/etc/containerd/config.toml (merge)',
  });
  const notes = ['ctr reads these with: ctr images pull --hosts-dir /etc/containerd/certs.d IMAGE; crictl / the kubelet read them through config_path.'];
  if (base.startsWith('http:')) notes.push('The mirror is plain HTTP: containerd accepts it from hosts.toml (the host URL says http://); no other setting is needed.');
  return { files, notes };
}

function docker(config: Config, o: ClientConfigOptions, u: URL, base: string): ClientConfig {
  // dockerd sends Docker Hub pulls to a registry mirror as paths without a registry name
  // (/v2/library/nginx/...), which the mirror routes to its default registry: anything else there
  // would be served to Docker as Docker Hub content.
  if (config.defaultRegistry !== DOCKER_HUB) {
    throw new Error(`Docker's registry-mirrors sends Docker Hub pulls (docker pull nginx) as /v2/library/nginx/..., without a registry name, and this mirror routes such paths to ${config.defaultRegistry === '' ? 'no registry (default_registry = "")' : `"${config.defaultRegistry}" (default_registry)`}: Docker would get the wrong content or none. Set default_registry = "docker.io" with a [[registry]] for docker.io, or pull by the mirror's name (docker pull ${u.host}/gcr.io/...)`);
  }
  const daemon: Record<string, unknown> = { 'registry-mirrors': [base] };
  if (u.protocol === 'http:') daemon['insecure-registries'] = [u.host];
  const notes = [
    'Docker uses registry-mirrors for Docker Hub images only (docker pull nginx, docker pull bitnami/redis); gcr.io, quay.io and other registries are pulled from the registry itself. Pull those by the mirror\'s name instead (docker pull ' + `${u.host}/gcr.io/distroless/static`+ ') or use containerd / CRI-O.',
    'With the containerd image store (Docker 24+, "features": {"containerd-snapshotter": true}), Docker resolves through containerd and also reads /etc/docker/certs.d/<registry>/hosts.toml: regmirror config containerd writes those files.',
    'Merge into /etc/docker/daemon.json, then: systemctl restart docker. Check with: docker info (Registry Mirrors).',
  ];
  if (o.ca !== undefined) notes.push(`Install the mirror's CA for Docker: /etc/docker/certs.d/${u.host}/ca.crt (a copy of ${o.ca}).`);
  return { files: [{ path: 'daemon.json', content: `${JSON.stringify(daemon, null, 2)}\n`, installTo: '/etc/docker/daemon.json (merge)' }], notes };
}

function registriesConf(config: Config, o: ClientConfigOptions, u: URL): ClientConfig {
  const blocks = config.registries.map((r) =>
    [
      '[[registry]]',
      `prefix = ${q(r.host)}`,
      `location = ${q(r.host)}`,
      ...(o.digestOnly ? ['mirror-by-digest-only = true'] : []),
      '',
      '[[registry.mirror]]',
      `location = ${q(`${u.host}/${r.host}`)}`,
      ...(u.protocol === 'http:' ? ['insecure = true'] : []),
      '',
    ].join('\n'),
  );
  const header = [
    `# regmirror (${u.origin}) as the mirror of every registry it mirrors: CRI-O, podman, skopeo, buildah.`,
    '# Put in /etc/containers/registries.conf.d/50-regmirror.conf (or merge into /etc/containers/registries.conf).',
    o.digestOnly ? '# mirror-by-digest-only: only pulls by digest use the mirror; pulls by tag go to the registry.' : '# A failed or missing image on the mirror falls back to the registry itself.',
    '',
  ];
  const notes = ['CRI-O: systemctl restart crio (podman and skopeo read it on every run).'];
  if (o.ca !== undefined) notes.push(`Install the mirror's CA: /etc/containers/certs.d/${u.host}/ca.crt (a copy of ${o.ca}).`);
  return { files: [{ path: 'registries.conf', content: `${header.join('\n')}${blocks.join('\n')}`, installTo: '/etc/containers/registries.conf.d/50-regmirror.conf' }], notes };
}

function gdc(config: Config, o: ClientConfigOptions, base: string): ClientConfig {
  const endpoint = o.namespace === undefined ? base : `${base}/v2/${o.namespace}`;
  const lines = [
    '# GDC / Anthos clusters on bare metal: the registryMirrors block of the cluster config',
    '# (Cluster spec.nodeConfig.registryMirrors). Apply with bmctl (create or update cluster).',
    'registryMirrors:',
    `  - endpoint: ${q(endpoint)}`,
    ...(o.ca === undefined ? [] : [`    caCertPath: ${q(o.ca)}`]),
    ...(o.credentials === undefined ? [] : [`    pullCredentialConfigPath: ${q(o.credentials)}`]),
    '    hosts:',
    ...mirroredHosts(config, o.namespace).map((h) => `      - ${q(h)}`),
    '',
  ];
  const notes = ['GDC writes containerd hosts.toml files on every node from this block; containerd then sends /v2/<repo>/...?ns=<registry> (or /v2/<namespace>/... with a namespace endpoint), which regmirror serves.'];
  if (base.startsWith('http:')) notes.push('GDC expects an https:// mirror endpoint: serve regmirror with [server] tls_cert / tls_key and pass --ca.');
  return { files: [{ path: 'gdc-registry-mirrors.yaml', content: lines.join('\n'), installTo: 'the cluster config (spec.nodeConfig)' }], notes };
}

function openshift(config: Config, o: ClientConfigOptions, u: URL): ClientConfig {
  const policy = o.noFallback ? 'NeverContactSource' : 'AllowContactingSource';
  const entries = (indent: string, withPolicy: boolean): string[] =>
    config.registries.flatMap((r) => [`${indent}- source: ${q(r.host)}`, `${indent}  mirrors:`, `${indent}    - ${q(`${u.host}/${r.host}`)}`, ...(withPolicy ? [`${indent}  mirrorSourcePolicy: ${policy}`] : [])]);
  const doc = (apiVersion: string, kind: string, listKey: string, withPolicy: boolean): string =>
    [`apiVersion: ${apiVersion}`, `kind: ${kind}`, 'metadata:', '  name: regmirror', 'spec:', `  ${listKey}:`, ...entries('    ', withPolicy), ''].join('\n');
  return {
    files: [
      { path: 'imagedigestmirrorset.yaml', content: doc('config.openshift.io/v1', 'ImageDigestMirrorSet', 'imageDigestMirrors', true), installTo: 'oc apply -f' },
      { path: 'imagetagmirrorset.yaml', content: doc('config.openshift.io/v1', 'ImageTagMirrorSet', 'imageTagMirrors', true), installTo: 'oc apply -f' },
      { path: 'imagecontentsourcepolicy.yaml', content: doc('operator.openshift.io/v1alpha1', 'ImageContentSourcePolicy', 'repositoryDigestMirrors', false), installTo: 'oc apply -f (OpenShift before 4.13)' },
    ],
    notes: [
      'OpenShift renders these into CRI-O registries.conf on every node (host-prefixed mirror locations, which regmirror serves) and rolls the nodes.',
      'ImageContentSourcePolicy is the pre-4.13 form (digest pulls only); use the two MirrorSets on 4.13+.',
      ...(u.protocol === 'http:' ? [`The mirror is plain HTTP: add ${u.host} to image.config.openshift.io/cluster spec.registrySources.insecureRegistries.`] : []),
    ],
  };
}

/** Builds the client configuration for `runtime`. Throws Error with a message for the user. */
export function clientConfig(config: Config, runtime: Runtime, o: ClientConfigOptions): ClientConfig {
  const u = parseMirrorUrl(o.mirrorUrl);
  const base = u.origin;
  if (config.registries.length === 0) throw new Error('the configuration mirrors no registry ([[registry]]): nothing to point a runtime at');
  switch (runtime) {
    case 'containerd':
      return containerd(config, o, base);
    case 'docker':
      return docker(config, o, u, base);
    case 'registries-conf':
      return registriesConf(config, o, u);
    case 'gdc':
      return gdc(config, o, base);
    case 'openshift':
      return openshift(config, o, u);
  }
}
