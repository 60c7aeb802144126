/**
 * A guard for undici 7's HTTP/1 client against nodejs/undici#5360: when a response body applies
 * backpressure, undici pauses its llhttp parser; if the peer then closes the connection (a
 * `Connection: close` or close-delimited response whose last bytes were already read), the
 * socket's 'end' handler calls `Parser.finish()`, which asserts `!this.paused` and throws an
 * AssertionError from an event handler: the whole process exits (issue 14, defect 1). undici 8
 * fixes it (PR #5474) but needs Node.js 22; the 7.x line has no fix.
 *
 * The guard wraps each upstream socket's `emit`: an 'end' that arrives while the parser is paused
 * is held back until the body's consumer resumes the parser (undici's `resume()` ends by calling
 * `this.readMore()`, which the guard wraps on that parser), and only then delivered, when `finish()` completes the response as
 * undici intends (close-delimited: the end of the body; a short Content-Length or an unterminated
 * chunked body: an error). While 'end' is held, the socket is kept half-open so that it does not
 * close under the paused parser; undici's body timeout still applies to a consumer that never
 * reads again, and undici destroys the socket once the response completes.
 * If undici's internals change shape (no parser symbol), the guard does nothing.
 */
import type { Socket } from 'node:net';
import { buildConnector } from 'undici';

interface PausableParser {
  paused: boolean;
  /** Called (looked up on the instance) at the end of every resume() and on each 'readable'. */
  readMore(): void;
}

function parserOf(socket: Socket): PausableParser | undefined {
  const sym = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'parser');
  const p = sym === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[sym];
  return typeof p === 'object' && p !== null && typeof (p as PausableParser).readMore === 'function' ? (p as PausableParser) : undefined;
}

/** Makes `socket` hold back 'end' while undici's parser for it is paused (see the module comment). */
export function guardPausedEnd(socket: Socket): void {
  const emit = socket.emit as (this: Socket, event: string | symbol, ...args: unknown[]) => boolean;
  socket.emit = function guardedEmit(this: Socket, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'end') {
      const parser = parserOf(this);
      if (parser?.paused === true) {
        const readMore = parser.readMore;
        parser.readMore = function readMoreThenEnd(this: PausableParser): void {
          readMore.call(this);
          if (this.paused) return; // paused again on buffered bytes: wait for the next resume
          parser.readMore = readMore;
          socket.allowHalfOpen = halfOpen;
          emit.call(socket, 'end');
        };
        // Node ends (and so closes) a socket right after 'end' unless it allows half-open: keep it
        // open until the held 'end' is delivered, or undici's parser could never drain it.
        const halfOpen = this.allowHalfOpen;
        this.allowHalfOpen = true;
        return true;
      }
    }
    return emit.call(this, event, ...args);
  } as typeof socket.emit;
}

type ConnectOptions = Parameters<typeof buildConnector>[0];

/** undici's own connector (TLS options, connect timeout) whose sockets carry guardPausedEnd. */
export function guardedConnector(options: ConnectOptions): buildConnector.connector {
  const connect = buildConnector(options);
  return (opts, callback) =>
    connect(opts, (err, socket) => {
      if (err === null && socket !== null) guardPausedEnd(socket as Socket);
      // undici's callback type is a union of (err, null) | (null, socket).
      (callback as (e: Error | null, s: unknown) => void)(err, socket);
    });
}
