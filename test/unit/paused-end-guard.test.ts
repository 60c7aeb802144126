import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { guardedConnector } from '../../src/upstream/paused-end-guard.ts';

/** A raw server that answers every request with `head` + `body`, then closes (FIN). */
async function rawServer(head: string, body: Buffer): Promise<{ url: string; server: Server }> {
  const server = createServer((sock) => {
    sock.once('data', () => {
      sock.write(head);
      sock.write(body);
      sock.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

/** Requests `url`, waits `delayMs` before reading (the parser pauses meanwhile), returns the bytes read. */
async function fetchLate(url: string, delayMs: number): Promise<number> {
  const agent = new Agent({ connect: guardedConnector({ timeout: 5_000 }), bodyTimeout: 5_000 });
  try {
    const res = await request(url, { dispatcher: agent });
    await new Promise((r) => setTimeout(r, delayMs));
    let n = 0;
    for await (const c of res.body) n += (c as Buffer).byteLength;
    return n;
  } finally {
    await agent.close();
  }
}

test('a close-delimited body read late (paused parser, then FIN) completes instead of crashing the process', async () => {
  for (const size of [60_000, 80_000, 100_000, 300_000]) {
    const s = await rawServer('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n', Buffer.alloc(size, 0x61));
    try {
      assert.equal(await fetchLate(s.url, 100), size);
    } finally {
      s.server.close();
    }
  }
});

test('a Content-Length body with Connection: close read late completes', async () => {
  const size = 90_000;
  const s = await rawServer(`HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: ${size}\r\n\r\n`, Buffer.alloc(size, 0x62));
  try {
    assert.equal(await fetchLate(s.url, 100), size);
  } finally {
    s.server.close();
  }
});

test('a cut Content-Length body read late is an error, not a short success', async () => {
  const s = await rawServer('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 200000\r\n\r\n', Buffer.alloc(90_000, 0x63));
  try {
    await assert.rejects(fetchLate(s.url, 100));
  } finally {
    s.server.close();
  }
});

test('an unterminated chunked body read late is an error, not a short success', async () => {
  const chunk = Buffer.concat([Buffer.from((90_000).toString(16) + '\r\n'), Buffer.alloc(90_000, 0x64), Buffer.from('\r\n')]);
  const s = await rawServer('HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n', chunk);
  try {
    await assert.rejects(fetchLate(s.url, 100));
  } finally {
    s.server.close();
  }
});
