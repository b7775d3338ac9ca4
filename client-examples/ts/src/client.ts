import { createClient, type Client as WsClient } from 'graphql-ws';

import * as D from './documents.js';
import type {
  FileInfo,
  InspectedUpload,
  SpaceInfo,
  TypedDocument,
  VersionInfo,
} from './documents.js';
import { FilesyncError, aborted, fromGraphQLError } from './errors.js';
import { liveChanges, type LiveOptions, type LiveEvent } from './live.js';
import { download, upload, type DownloadOptions, type UploadOptions } from './transfer.js';
import type { Member, Role, SpaceSettings } from './schema.js';

export interface ClientOptions {
  /** The server's base URL, such as `http://127.0.0.1:8080` (`/graphql` is added). */
  url: string;
  /** A bearer token, or a function giving the current one (called for each request). */
  token: string | (() => string | Promise<string>);
  /** `fetch` to use (the global one by default). */
  fetch?: typeof fetch;
  /** A WebSocket constructor where there is no global one (Node 20: the `ws` package). */
  webSocketImpl?: unknown;
}

/**
 * A connection to a Filesync server: typed queries and mutations over HTTP, live changes
 * over one shared websocket, uploads and downloads straight to storage.
 */
export class FilesyncClient {
  readonly url: string;
  readonly fetch: typeof fetch;
  private readonly tokenSource: ClientOptions['token'];
  private readonly webSocketImpl: unknown;
  private ws: WsClient | undefined;
  private isClosed = false;

  constructor(options: ClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.tokenSource = options.token;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.webSocketImpl = options.webSocketImpl;
  }

  /** The current bearer token. */
  async token(): Promise<string> {
    return typeof this.tokenSource === 'function' ? await this.tokenSource() : this.tokenSource;
  }

  /** Runs one query or mutation; a GraphQL error is thrown as a `FilesyncError`. */
  async request<TData, TVars>(
    document: TypedDocument<TData, TVars>,
    variables: TVars,
    signal?: AbortSignal,
  ): Promise<TData> {
    let response: Response;
    try {
      response = await this.fetch(`${this.url}/graphql`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/graphql-response+json, application/json',
          authorization: `Bearer ${await this.token()}`,
        },
        body: JSON.stringify({ query: document.query, variables }),
        signal: signal ?? null,
      });
    } catch (e) {
      if (signal?.aborted) throw aborted(signal);
      throw new FilesyncError('NETWORK', `cannot reach ${this.url}: ${String(e)}`, { cause: e });
    }
    let body: { data?: TData | null; errors?: unknown[] };
    try {
      body = (await response.json()) as typeof body;
    } catch (e) {
      if (signal?.aborted) throw aborted(signal);
      // Not GraphQL (a proxy's page, say): the status says whose fault it is.
      const s = response.status;
      const code =
        s === 401
          ? 'UNAUTHENTICATED'
          : s === 403
            ? 'FORBIDDEN'
            : s === 404
              ? 'NOT_FOUND'
              : s === 429
                ? 'RATE_LIMITED'
                : s >= 500
                  ? 'INTERNAL'
                  : 'BAD_INPUT';
      throw new FilesyncError(code, `the server answered ${s} without a GraphQL body`, {
        status: s,
        cause: e,
      });
    }
    if (body.errors && body.errors.length > 0) {
      throw fromGraphQLError(body.errors[0], response.status);
    }
    if (body.data == null) {
      throw new FilesyncError('INTERNAL', 'the server answered without data', {
        status: response.status,
      });
    }
    return body.data;
  }

  /** The shared websocket client (connected on first use, closed when idle). */
  websocket(): WsClient {
    if (this.isClosed) throw new FilesyncError('ABORTED', 'the client is closed');
    if (!this.ws) {
      const url = this.url.replace(/^http/, 'ws') + '/graphql/ws';
      this.ws = createClient({
        url,
        webSocketImpl: this.webSocketImpl,
        lazy: true,
        // Resubscribing is `liveChanges`' job: it knows the cursor to resume from, where
        // graphql-ws would replay the first subscription's variables.
        retryAttempts: 0,
        keepAlive: 10_000,
        connectionParams: async () => ({ authorization: `Bearer ${await this.token()}` }),
      });
    }
    return this.ws;
  }

  /** Closed by `close()`: live iterators end rather than reconnect. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Closes the websocket, ending every live iterator. */
  async close(): Promise<void> {
    this.isClosed = true;
    const ws = this.ws;
    this.ws = undefined;
    await ws?.dispose();
  }

  // Spaces and members.

  async me(): Promise<string> {
    return (await this.request(D.ME, {})).me.id;
  }

  /** Every space the caller belongs to. */
  async spaces(): Promise<SpaceInfo[]> {
    const all: SpaceInfo[] = [];
    let after: string | null = null;
    for (;;) {
      const page: SpaceInfo[] = (await this.request(D.SPACES, { first: 100, after })).spaces;
      all.push(...page);
      if (page.length < 100) return all;
      after = page[page.length - 1]!.id;
    }
  }

  async space(id: string): Promise<(SpaceInfo & { settings: SpaceSettings }) | null> {
    return (await this.request(D.SPACE, { id })).space;
  }

  async createSpace(name: string): Promise<SpaceInfo> {
    return (await this.request(D.CREATE_SPACE, { name })).createSpace;
  }

  /** Every member of a space, by user id. */
  async members(spaceId: string): Promise<Member[]> {
    const all: Member[] = [];
    let after: string | null = null;
    for (;;) {
      const space: { members: Member[] } | null = (
        await this.request(D.MEMBERS, { id: spaceId, first: 100, after })
      ).space;
      if (!space) throw new FilesyncError('NOT_FOUND', 'no such space');
      all.push(...space.members);
      if (space.members.length < 100) return all;
      after = space.members[space.members.length - 1]!.userId;
    }
  }

  /** Adds or changes a member (owners only); `null` removes them. */
  async setMember(spaceId: string, userId: string, role: Role | null): Promise<SpaceInfo> {
    return (await this.request(D.SET_MEMBER, { spaceId, userId, role })).setMember;
  }

  // Files.

  /** Every live file of a space (optionally under a name prefix), by name. */
  async files(spaceId: string, options: { prefix?: string } = {}): Promise<FileInfo[]> {
    const all: FileInfo[] = [];
    let after: string | null = null;
    for (;;) {
      const { files }: { files: FilesPage } = await this.request(D.FILES, {
        spaceId,
        prefix: options.prefix ?? null,
        // Within the server's default complexity budget (20,000) for these fields.
        first: 500,
        after,
      });
      all.push(...files.nodes);
      if (!files.pageInfo.hasNextPage) return all;
      after = files.pageInfo.endCursor ?? null;
    }
  }

  /** One page of incremental sync: what changed after `since` (everything when null). */
  async changes(spaceId: string, since: string | null, limit = 500) {
    return (await this.request(D.CHANGES, { spaceId, since, limit })).changes;
  }

  async file(id: string, version?: number) {
    return (await this.request(D.FILE, { id, version: version ?? null })).file;
  }

  /** A file's committed versions, oldest first. */
  async history(fileId: string): Promise<VersionInfo[]> {
    const all: VersionInfo[] = [];
    let after: string | null = null;
    for (;;) {
      const { fileHistory }: { fileHistory: HistoryPage } = await this.request(D.HISTORY, {
        id: fileId,
        first: 100,
        after,
      });
      all.push(...fileHistory.nodes);
      if (!fileHistory.pageInfo.hasNextPage) return all;
      after = fileHistory.pageInfo.endCursor ?? null;
    }
  }

  /** Makes `version` current again, on top of `baseVersion` (`CONFLICT` if it moved). */
  async restore(fileId: string, version: number, baseVersion: number): Promise<FileInfo> {
    return (await this.request(D.RESTORE, { id: fileId, version, baseVersion })).restoreVersion;
  }

  /** A new name, on top of `baseVersion` (`CONFLICT` if the file moved on meanwhile). */
  async rename(fileId: string, baseVersion: number, name: string): Promise<FileInfo> {
    return (await this.request(D.RENAME, { id: fileId, baseVersion, name })).updateFile;
  }

  /** Deletes a file; with `baseVersion`, only if it is still that version. */
  async remove(fileId: string, baseVersion?: number): Promise<FileInfo> {
    return (await this.request(D.DELETE, { id: fileId, baseVersion: baseVersion ?? null }))
      .deleteFile;
  }

  /** The owners' inspector: the space's uploads in every state beside their objects. */
  async inspectUploads(spaceId: string, first = 100): Promise<InspectedUpload[]> {
    const space = (await this.request(D.UPLOADS, { id: spaceId, first })).space;
    if (!space) throw new FilesyncError('NOT_FOUND', 'no such space');
    return space.uploads;
  }

  /** Uploads `blob` as a new file or a new version (three phases; see `UploadOptions`). */
  upload(blob: Blob, options: UploadOptions): Promise<FileInfo> {
    return upload(this, blob, options);
  }

  /** A file's content (the current version, or `version`), verified by its SHA-256. */
  download(fileId: string, options: DownloadOptions = {}): Promise<Blob> {
    return download(this, fileId, options);
  }

  /** The space's changes, live, resuming after dropped sockets (see `liveChanges`). */
  liveChanges(spaceId: string, options: LiveOptions = {}): AsyncIterableIterator<LiveEvent> {
    return liveChanges(this, spaceId, options);
  }
}

type FilesPage = {
  nodes: FileInfo[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
};
type HistoryPage = {
  nodes: VersionInfo[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
};

/** Throws `ABORTED` if the signal fired. */
export function checkAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw aborted(signal);
}
