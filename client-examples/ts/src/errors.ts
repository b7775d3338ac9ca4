/** The stable codes the server puts in `extensions.code`, and the client's own. */
export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'BAD_INPUT'
  | 'CONFLICT'
  | 'UPLOAD_INCOMPLETE'
  /** A multipart upload's whole content is still being verified: commit again. */
  | 'UPLOAD_VERIFYING'
  | 'UPLOAD_EXPIRED'
  | 'CHECKSUM_MISMATCH'
  | 'PAYLOAD_TOO_LARGE'
  | 'RATE_LIMITED'
  | 'CURSOR_EXPIRED'
  | 'SLOW_SUBSCRIBER'
  | 'SHUTTING_DOWN'
  | 'STORAGE_FULL'
  | 'INTERNAL'
  /** The server could not be reached, or the connection broke. */
  | 'NETWORK'
  /** The caller's `AbortSignal` fired. */
  | 'ABORTED'
  /** A downloaded body did not match the file's SHA-256. */
  | 'CORRUPT_DOWNLOAD'
  /** A code this client does not know (a newer server). */
  | 'UNKNOWN';

const KNOWN = new Set<string>([
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'BAD_INPUT',
  'CONFLICT',
  'UPLOAD_INCOMPLETE',
  'UPLOAD_VERIFYING',
  'UPLOAD_EXPIRED',
  'CHECKSUM_MISMATCH',
  'PAYLOAD_TOO_LARGE',
  'RATE_LIMITED',
  'CURSOR_EXPIRED',
  'SLOW_SUBSCRIBER',
  'SHUTTING_DOWN',
  'STORAGE_FULL',
  'INTERNAL',
]);

/** Everything the library throws: the server's code and what came with it. */
export class FilesyncError extends Error {
  override readonly name = 'FilesyncError';
  /** For `CONFLICT`: the file's version now (retry on it, or keep both). */
  readonly currentVersion: number | undefined;
  /** For `CONFLICT`: the file it is about. */
  readonly fileId: string | undefined;
  /** For `RATE_LIMITED`: wait this long before trying again. */
  readonly retryAfterSeconds: number | undefined;
  /** The HTTP status, when the error came with one. */
  readonly status: number | undefined;
  /** For `UPLOAD_INCOMPLETE` of a multipart upload: the parts still to send. */
  readonly missingParts: number[] | undefined;
  /** For `UPLOAD_VERIFYING`: commit again after this many milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    extra: {
      currentVersion?: number;
      fileId?: string;
      retryAfterSeconds?: number;
      status?: number;
      missingParts?: number[];
      retryAfterMs?: number;
      cause?: unknown;
    } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.currentVersion = extra.currentVersion;
    this.fileId = extra.fileId;
    this.retryAfterSeconds = extra.retryAfterSeconds;
    this.status = extra.status;
    this.missingParts = extra.missingParts;
    this.retryAfterMs = extra.retryAfterMs;
  }

  /** Worth trying again later, unchanged (the server or the network, not the request). */
  get transient(): boolean {
    return ['NETWORK', 'RATE_LIMITED', 'SHUTTING_DOWN', 'SLOW_SUBSCRIBER', 'INTERNAL'].includes(
      this.code,
    );
  }
}

/** A GraphQL error object (`{message, extensions}`) as a `FilesyncError`. */
export function fromGraphQLError(error: unknown, status?: number): FilesyncError {
  const e = (error ?? {}) as { message?: unknown; extensions?: Record<string, unknown> };
  const ext = e.extensions ?? {};
  const raw = typeof ext.code === 'string' ? ext.code : '';
  const code: ErrorCode = KNOWN.has(raw) ? (raw as ErrorCode) : 'UNKNOWN';
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return new FilesyncError(code, typeof e.message === 'string' ? e.message : String(error), {
    currentVersion: num(ext.currentVersion),
    fileId: typeof ext.fileId === 'string' ? ext.fileId : undefined,
    retryAfterSeconds: num(ext.retryAfterSeconds),
    status,
    missingParts: Array.isArray(ext.missingParts)
      ? ext.missingParts.filter((n): n is number => typeof n === 'number')
      : undefined,
    retryAfterMs: num(ext.retryAfterMs),
  });
}

/** The error for an aborted operation. */
export function aborted(signal?: AbortSignal): FilesyncError {
  return new FilesyncError('ABORTED', 'cancelled', { cause: signal?.reason });
}

/** Plain words for each code: a sentence and what to do, for people rather than logs. */
export function describeError(error: unknown): { title: string; action: string } {
  const code = error instanceof FilesyncError ? error.code : 'UNKNOWN';
  switch (code) {
    case 'UNAUTHENTICATED':
      return { title: 'Your sign-in is no longer valid.', action: 'Sign in again.' };
    case 'FORBIDDEN':
      return {
        title: 'You are not allowed to do that here.',
        action: 'Ask an owner of the space for the role you need.',
      };
    case 'NOT_FOUND':
      return {
        title: 'It is not there any more.',
        action: 'Someone may have removed it; refresh the list.',
      };
    case 'BAD_INPUT':
      return {
        title: error instanceof Error ? error.message : 'The server refused the request.',
        action: 'Change it and try again.',
      };
    case 'CONFLICT':
      return {
        title: 'Someone changed this file while you were working on it.',
        action: 'Keep both, overwrite their version, or discard yours.',
      };
    case 'UPLOAD_EXPIRED':
      return { title: 'The upload took too long and expired.', action: 'Upload the file again.' };
    case 'UPLOAD_INCOMPLETE':
      return { title: 'The upload did not finish.', action: 'Upload the file again.' };
    case 'UPLOAD_VERIFYING':
      return {
        title: 'The server is still checking the uploaded file.',
        action: 'It is published in a moment; try again shortly.',
      };
    case 'CHECKSUM_MISMATCH':
      return {
        title: 'The file changed while it was being uploaded.',
        action: 'Upload it again once it is saved.',
      };
    case 'PAYLOAD_TOO_LARGE':
      return {
        title: 'The file is larger than this space accepts.',
        action: 'Ask an owner about the size limit.',
      };
    case 'RATE_LIMITED': {
      const s = error instanceof FilesyncError ? error.retryAfterSeconds : undefined;
      return {
        title: 'Too many requests right now.',
        action: s ? `Try again in ${s} s.` : 'Try again in a moment.',
      };
    }
    case 'STORAGE_FULL':
      return {
        title: 'The server has run out of storage.',
        action: 'Tell its operator; try again later.',
      };
    case 'NETWORK':
    case 'SHUTTING_DOWN':
      return {
        title: 'The server cannot be reached.',
        action: 'Check your connection; this retries on its own.',
      };
    case 'ABORTED':
      return { title: 'Cancelled.', action: '' };
    case 'CORRUPT_DOWNLOAD':
      return { title: 'The download was damaged on the way.', action: 'Download it again.' };
    default:
      return {
        title: 'Something went wrong on the server.',
        action: 'Try again; if it keeps happening, tell its operator.',
      };
  }
}
