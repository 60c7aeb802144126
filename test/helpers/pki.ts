/** Test PKI made with the real openssl CLI: a CA, server certificates for 127.0.0.1, client certificates. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertPair {
  cert: string;
  key: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Creates a CA in `dir/<name>` and returns its cert/key paths. */
export function makeCa(dir: string, name: string): CertPair {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', 'ca.key', '-out', 'ca.crt', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], d);
  return { cert: join(d, 'ca.crt'), key: join(d, 'ca.key') };
}

/** Issues a certificate signed by `ca`: for a server (SAN 127.0.0.1, localhost) or a client. */
export function issueCert(ca: CertPair, dir: string, name: string, usage: 'server' | 'client'): CertPair {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  const ext = usage === 'server'
    ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n'
    : 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n';
  writeFileSync(join(d, 'ext.cnf'), ext);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', 'tls.key', '-out', 'tls.csr'], d);
  openssl(['x509', '-req', '-in', 'tls.csr', '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'tls.crt'], d);
  return { cert: join(d, 'tls.crt'), key: join(d, 'tls.key') };
}
