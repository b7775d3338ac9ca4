import type { FilesyncClient } from './client.js';
import { LIVE_CHANGES, type Change } from './documents.js';
import { FilesyncError, fromGraphQLError } from './errors.js';

/** A change, or the `READY` marker (`kind: 'READY'`: replay done, nothing missed from here). */
export type LiveEvent = Change;

/** Where a live iterator stands, for a UI's banner. */
export type LiveStatus = 'connecting' | 'live' | 'offline';

export interface LiveOptions {
  /** Start after this cursor (its changes are replayed first); omitted: from now on. */
  since?: string | null;
  /** Only these files' changes (`READY` still comes). */
  fileIds?: string[];
  /** Ends the iteration. */
  signal?: AbortSignal;
  /** Told when the socket is being opened, is live (after `READY`), or is down. */
  onStatus?: (status: LiveStatus, error?: FilesyncError) => void;
  /** First wait before resubscribing, doubled per failed try up to `maxDelayMs`. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

/** Errors that resubscribing cannot fix: the iterator ends with them. */
const FATAL = new Set(['UNAUTHENTICATED', 'FORBIDDEN', 'NOT_FOUND', 'BAD_INPUT', 'CURSOR_EXPIRED']);

/**
 * The space's changes as an async iterator, each exactly once and in order, across dropped
 * sockets: after a disconnect it subscribes again (with backoff and jitter) from the cursor
 * of the last event it delivered, and the server replays what happened meanwhile. Each
 * (re)subscription's replay ends with a `READY` event. Ends when `signal` fires or the
 * consumer stops; throws a `FilesyncError` for what retrying cannot fix (the token refused,
 * the caller removed from the space).
 */
export async function* liveChanges(
  client: FilesyncClient,
  spaceId: string,
  options: LiveOptions = {},
): AsyncGenerator<LiveEvent, void, undefined> {
  const { signal, onStatus } = options;
  const minDelay = options.minDelayMs ?? 250;
  const maxDelay = options.maxDelayMs ?? 15_000;
  let since = options.since ?? null;
  let failures = 0;
  while (!signal?.aborted && !client.closed) {
    onStatus?.('connecting');
    const queue = new Queue<LiveEvent>();
    const unsubscribe = client.websocket().subscribe<{ changes: Change }>(
      {
        query: LIVE_CHANGES.query,
        variables: { spaceId, since, fileIds: options.fileIds ?? null },
      },
      {
        next: (result) => {
          if (result.errors?.length) queue.fail(fromGraphQLError(result.errors[0]));
          else if (result.data) queue.push(result.data.changes);
        },
        error: (e) => queue.fail(socketError(e)),
        complete: () => queue.end(),
      },
    );
    const stop = () => queue.end();
    signal?.addEventListener('abort', stop);
    let error: FilesyncError | undefined;
    try {
      for await (const event of queue) {
        if (event.kind === 'READY') {
          failures = 0;
          onStatus?.('live');
        }
        since = event.cursor;
        yield event;
      }
    } catch (e) {
      error = e instanceof FilesyncError ? e : socketError(e);
    } finally {
      signal?.removeEventListener('abort', stop);
      unsubscribe();
    }
    if (signal?.aborted || client.closed) return;
    if (error && FATAL.has(error.code)) {
      onStatus?.('offline', error);
      throw error;
    }
    onStatus?.('offline', error ?? new FilesyncError('NETWORK', 'the subscription ended'));
    const wait = Math.min(maxDelay, minDelay * 2 ** failures++);
    await sleep(wait / 2 + Math.random() * (wait / 2), signal);
  }
}

/** What graphql-ws reports for a broken socket or a refused subscription. */
function socketError(e: unknown): FilesyncError {
  if (Array.isArray(e) && e.length > 0) return fromGraphQLError(e[0]);
  if (e instanceof FilesyncError) return e;
  const close = e as { code?: unknown; reason?: unknown };
  if (typeof close?.code === 'number') {
    // 4401/4403: the connection's token was refused.
    if (close.code === 4401 || close.code === 4403) {
      return new FilesyncError('UNAUTHENTICATED', String(close.reason || 'token refused'));
    }
    return new FilesyncError(
      'NETWORK',
      `the live connection closed (${close.code}${close.reason ? ': ' + String(close.reason) : ''})`,
    );
  }
  return new FilesyncError('NETWORK', `the live connection failed: ${String(e)}`, { cause: e });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done);
  });
}

/** An unbounded single-consumer queue, iterable once. */
class Queue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private done = false;
  private error: unknown = undefined;
  private wake: (() => void) | undefined;

  push(item: T) {
    if (this.done) return;
    this.items.push(item);
    this.notify();
  }
  fail(error: unknown) {
    if (this.done) return;
    this.error = error;
    this.done = true;
    this.notify();
  }
  end() {
    this.done = true;
    this.notify();
  }
  private notify() {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift()!;
        continue;
      }
      if (this.done) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
