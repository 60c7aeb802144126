/**
 * Answers for requests Node's HTTP parser rejects before any handler sees them (oversized headers,
 * a duplicate or conflicting Content-Length, Transfer-Encoding with Content-Length, a bad method):
 * a status and an OCI error envelope, then the connection is closed, as nginx and Distribution do
 * (RFC 9112 §6.3: such a message cannot be framed, so the connection cannot be reused). A TLS
 * handshake on the plain port (skopeo probing an `insecure` mirror) has no HTTP peer to read an
 * answer and is closed quietly.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { RegistryError, renderErrorBody } from '../oci/index.ts';


/** The error (a row of the one table) for a parser error code (llhttp's HPE_* or Node's ERR_HTTP_*). */
export function clientErrorAnswer(code: string | undefined): RegistryError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return new RegistryError('HTTP_HEADERS_TOO_LARGE', 'the request headers are larger than the mirror accepts (16 KiB in all)');
    case 'HPE_INVALID_METHOD':
      return new RegistryError('HTTP_METHOD_UNKNOWN', 'unknown HTTP method: the registry API uses GET, HEAD, POST, PATCH, PUT and DELETE');
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return new RegistryError('HTTP_MALFORMED', 'the request has both Transfer-Encoding and Content-Length: send one of them');
    case 'HPE_INVALID_CONTENT_LENGTH':
      return new RegistryError('HTTP_MALFORMED', 'the request has an invalid or repeated Content-Length');
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return new RegistryError('HTTP_MALFORMED', 'the request has an invalid Transfer-Encoding: only chunked is accepted');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return new RegistryError('HTTP_TIMEOUT', 'the request was not received in time');
    default:
      return new RegistryError('HTTP_MALFORMED', `the request is not valid HTTP/1.1 (${code ?? 'parse error'})`);
  }
}

/** The server's 'clientError' handler: answers (see the module comment) and closes the socket. */
export function answerClientError(err: Error & { code?: string; rawPacket?: Buffer }, socket: Duplex): void {
  const tlsHandshake = err.rawPacket !== undefined && err.rawPacket[0] === 0x16 && err.rawPacket[1] === 0x03;
  if (socket.destroyed || !socket.writable || err.code === 'ECONNRESET' || tlsHandshake) {
    socket.destroy();
    return;
  }
  const answer = clientErrorAnswer(err.code);
  const status = answer.status;
  const body = renderErrorBody(answer);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n${body}`,
  );
  // A peer that never reads its answer must not hold the socket.
  setTimeout(() => socket.destroy(), 5_000).unref();
}
