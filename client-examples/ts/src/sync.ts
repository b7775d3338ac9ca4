import type { FilesyncClient } from './client.js';
import type { FileInfo } from './documents.js';
import { FilesyncError } from './errors.js';
import type { LiveEvent, LiveStatus } from './live.js';

/**
 * Where a synced space keeps its files and cursor between runs. `save` must store the
 * changed files, the removals and the cursor together (all or nothing): a cursor saved
 * without the changes it covers would skip them for ever.
 */
export interface SpaceStore {
  load(spaceId: string): Promise<{ cursor: string | null; files: FileInfo[] }>;
  save(spaceId: string, cursor: string, changed: FileInfo[], removed: string[]): Promise<void>;
  /** Forgets everything about the space (before a full listing). */
  clear(spaceId: string): Promise<void>;
}

/** Keeps nothing between runs. */
export class MemoryStore implements SpaceStore {
  private spaces = new Map<string, { cursor: string | null; files: Map<string, FileInfo> }>();

  async load(spaceId: string) {
    const space = this.spaces.get(spaceId);
    return { cursor: space?.cursor ?? null, files: [...(space?.files.values() ?? [])] };
  }
  async save(spaceId: string, cursor: string, changed: FileInfo[], removed: string[]) {
    const space = this.spaces.get(spaceId) ?? { cursor: null, files: new Map() };
    for (const file of changed) space.files.set(file.id, file);
    for (const id of removed) space.files.delete(id);
    space.cursor = cursor;
    this.spaces.set(spaceId, space);
  }
  async clear(spaceId: string) {
    this.spaces.delete(spaceId);
  }
}

/** In the browser: IndexedDB, so a reload starts from the saved cursor. */
export class IndexedDBStore implements SpaceStore {
  private db: Promise<IDBDatabase>;

  constructor(name = 'filesync') {
    this.db = new Promise((resolve, reject) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => {
        const db = open.result;
        db.createObjectStore('cursors');
        db.createObjectStore('files', { keyPath: ['spaceId', 'id'] }).createIndex(
          'bySpace',
          'spaceId',
        );
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }

  async load(spaceId: string) {
    const tx = (await this.db).transaction(['cursors', 'files'], 'readonly');
    const cursor = request<string | undefined>(tx.objectStore('cursors').get(spaceId));
    const files = request<FileInfo[]>(tx.objectStore('files').index('bySpace').getAll(spaceId));
    return { cursor: (await cursor) ?? null, files: await files };
  }

  async save(spaceId: string, cursor: string, changed: FileInfo[], removed: string[]) {
    const tx = (await this.db).transaction(['cursors', 'files'], 'readwrite');
    const files = tx.objectStore('files');
    for (const file of changed) files.put(file);
    for (const id of removed) files.delete([spaceId, id]);
    tx.objectStore('cursors').put(cursor, spaceId);
    await done(tx);
  }

  /** Closes the database (a deletion waits for every connection to close). */
  async close() {
    (await this.db).close();
  }

  /** Deletes a store's database, with everything it kept (on sign-out, say). */
  static delete(name = 'filesync'): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = indexedDB.deleteDatabase(name);
      req.onsuccess = () => resolve();
      req.onerror = () => reject(req.error);
      req.onblocked = () => resolve(); // Deleted once the last connection closes.
    });
  }

  async clear(spaceId: string) {
    const tx = (await this.db).transaction(['cursors', 'files'], 'readwrite');
    tx.objectStore('cursors').delete(spaceId);
    tx.objectStore('files').delete(IDBKeyRange.bound([spaceId, ''], [spaceId, '\uffff']));
    await done(tx);
  }
}

function request<T>(req: IDBRequest): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result as T);
    req.onerror = () => reject(req.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error('transaction aborted'));
  });
}

export interface SyncOptions {
  signal?: AbortSignal;
  /** After each applied change (`file` as it now is; `deleted` for a removal). */
  onChange?: (file: FileInfo, event: LiveEvent | null) => void;
  /** After the first catch-up, and after a full reload: the whole map is current. */
  onReady?: (files: ReadonlyMap<string, FileInfo>) => void;
  onStatus?: (status: LiveStatus, error?: FilesyncError) => void;
  /** Told when syncing stopped for good (the token refused, the caller removed). */
  onError?: (error: FilesyncError) => void;
}

/** A space's live files, kept current by `syncSpace`. */
export interface SyncedSpace {
  /** The space's live files by id (tombstones are removed). */
  readonly files: ReadonlyMap<string, FileInfo>;
  /** The cursor of the last change applied. */
  readonly cursor: string | null;
  /** Resolves once the map has caught up with the server (the first `READY`); rejects
   * if syncing stops for good before that. */
  readonly ready: Promise<void>;
  /** Resolves when syncing stops (after `stop()`, or a fatal error). */
  readonly stopped: Promise<void>;
  stop(): void;
}

/**
 * Keeps a local map of a space's files: what the store saved (from its cursor), then
 * `changes` pages for what happened since, then live events, each change applied and saved
 * with its cursor. A `CURSOR_EXPIRED` (history the server no longer keeps) starts over from
 * a full listing.
 */
export function syncSpace(
  client: FilesyncClient,
  spaceId: string,
  store: SpaceStore,
  options: SyncOptions = {},
): SyncedSpace {
  const files = new Map<string, FileInfo>();
  const controller = new AbortController();
  options.signal?.addEventListener('abort', () => controller.abort());
  const signal = controller.signal;
  let cursor: string | null = null;
  let markReady: () => void = () => undefined;
  let failReady: (e: FilesyncError) => void = () => undefined;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  // A caller that never awaits `ready` must not see an unhandled rejection.
  ready.catch(() => undefined);

  const apply = async (changed: FileInfo[], next: string, event: LiveEvent | null) => {
    const live = changed.filter((f) => !f.deleted);
    const removed = changed.filter((f) => f.deleted).map((f) => f.id);
    // Shown first, saved next: a save that fails leaves the stored cursor behind, and the
    // next run replays the change (applying a change twice is harmless).
    for (const file of live) files.set(file.id, file);
    for (const id of removed) files.delete(id);
    for (const file of changed) options.onChange?.(file, event);
    await store.save(spaceId, next, live, removed);
    cursor = next;
  };

  const catchUp = async () => {
    for (;;) {
      const page = await client.changes(spaceId, cursor);
      await apply(page.files, page.nextCursor, null);
      if (!page.hasMore) return;
    }
  };

  const run = async () => {
    const saved = await store.load(spaceId);
    for (const file of saved.files) files.set(file.id, file);
    cursor = saved.cursor;
    for (let failures = 0; !signal.aborted;) {
      try {
        await catchUp();
        failures = 0;
        for await (const event of client.liveChanges(spaceId, {
          since: cursor,
          signal,
          onStatus: options.onStatus,
        })) {
          if (event.kind === 'READY') {
            markReady();
            options.onReady?.(files);
          } else if (event.file) {
            await apply([event.file], event.cursor, event);
          }
        }
        return;
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof FilesyncError && e.code === 'CURSOR_EXPIRED') {
          // Start over from a full listing; the map is replaced, never merged blindly.
          await store.clear(spaceId);
          files.clear();
          cursor = null;
          continue;
        }
        if (e instanceof FilesyncError && e.transient) {
          // The server is unreachable for now: wait and catch up again from the cursor.
          options.onStatus?.('offline', e);
          const wait = Math.min(15_000, 250 * 2 ** failures++);
          await new Promise((r) => setTimeout(r, wait / 2 + Math.random() * (wait / 2)));
          continue;
        }
        throw e;
      }
    }
  };

  const stopped = run().catch((e: unknown) => {
    const error =
      e instanceof FilesyncError ? e : new FilesyncError('INTERNAL', String(e), { cause: e });
    failReady(error);
    options.onError?.(error);
  });

  return {
    files,
    get cursor() {
      return cursor;
    },
    ready,
    stopped,
    stop: () => controller.abort(),
  };
}
