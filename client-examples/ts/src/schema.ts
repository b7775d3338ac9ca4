// Generated from schema.graphql by scripts/generate-schema-types.mjs: do not edit.
// Run `npm run generate` after the server schema changes.

export interface Scalars {
  ID: string;
  String: string;
  Boolean: boolean;
  Int: number;
  Float: number;
  Size: number;
  Cursor: string;
  DateTime: string;
  Upload: Blob;
}

export interface BeginUploadInput {
  spaceId: Scalars['ID'];
  /**
   * Set to upload a new version of an existing file; omit to create a file.
   */
  fileId?: Scalars['ID'] | null;
  name: Scalars['String'];
  size: Scalars['Size'];
  /**
   * Hex SHA-256 of the bytes.
   */
  sha256: Scalars['String'];
  contentType?: Scalars['String'] | null;
  /**
   * The version this upload replaces; defaults to the current one.
   */
  baseVersion?: Scalars['Int'] | null;
  /**
   * Replaces the metadata; omit to keep the current metadata.
   */
  metadata?: MetadataEntryInput[] | null;
  /**
   * How the bytes will be sent; omit for a PUT up to the server's multipart
   * threshold (64 MiB unless configured) and `MULTIPART` above it.
   */
  method?: UploadMethod | null;
}

export interface ChangeEvent {
  /**
   * Resume from here: the cursor of this change (for `READY`, of the last change seen).
   */
  cursor: Scalars['Cursor'];
  kind: ChangeKind;
  spaceId: Scalars['ID'];
  /**
   * Null for `READY`.
   */
  fileId: Scalars['ID'] | null;
  /**
   * The version this change made. Null for `READY`.
   */
  version: Scalars['Int'] | null;
  /**
   * The file as this change left it (a tombstone for `DELETED`). Null for `READY`.
   */
  file: File | null;
  /**
   * Who made the change. Null for `READY`.
   */
  actor: Scalars['ID'] | null;
  /**
   * When the change was committed (for `READY`, when it was sent).
   */
  at: Scalars['DateTime'];
}

/**
 * What a change did. `READY` is a subscription marker: replay is done and the live
 * listener is attached.
 */
export type ChangeKind =
  | 'READY'
  | 'CREATED'
  | 'UPDATED'
  | 'DELETED'
  | 'RESTORED';
export const ChangeKindValues: readonly ChangeKind[] = ['READY', 'CREATED', 'UPDATED', 'DELETED', 'RESTORED'];

/**
 * One page of incremental sync.
 */
export interface ChangePage {
  /**
   * Changed files, each once in its latest state (tombstones included), in seq order.
   */
  files: File[];
  /**
   * Pass as `since` to get what changed after this page.
   */
  nextCursor: Scalars['Cursor'];
  hasMore: Scalars['Boolean'];
}

export interface File {
  id: Scalars['ID'];
  spaceId: Scalars['ID'];
  name: Scalars['String'];
  version: Scalars['Int'];
  size: Scalars['Size'];
  /**
   * Hex SHA-256 of the content.
   */
  sha256: Scalars['String'];
  contentType: Scalars['String'] | null;
  /**
   * The user who inserted the file.
   */
  creator: Scalars['ID'];
  createdAt: Scalars['DateTime'];
  updatedAt: Scalars['DateTime'];
  deleted: Scalars['Boolean'];
  /**
   * The cursor of this file's last change.
   */
  cursor: Scalars['Cursor'];
  /**
   * A short-lived URL to GET the content; null for tombstones.
   */
  downloadUrl: Scalars['String'] | null;
  /**
   * User metadata (at most 64 entries; counted as 64 in the complexity limit).
   */
  metadata: MetadataEntry[];
  /**
   * Each store's copy of this version's content (owners only; empty when the space
   * does not replicate). Counted as a page of 10 in the complexity limit.
   */
  replicas: Replica[];
}

export interface FileConnection {
  /**
   * Information to aid in pagination.
   */
  pageInfo: PageInfo;
  /**
   * A list of edges.
   */
  edges: FileEdge[];
  /**
   * A list of nodes.
   */
  nodes: File[];
}

/**
 * An edge in a connection.
 */
export interface FileEdge {
  /**
   * The item at the end of the edge
   */
  node: File;
  /**
   * A cursor for use in pagination
   */
  cursor: Scalars['String'];
}

export interface FileVersion {
  fileId: Scalars['ID'];
  version: Scalars['Int'];
  kind: ChangeKind;
  /**
   * Only committed versions are ever listed.
   */
  state: VersionState;
  name: Scalars['String'];
  size: Scalars['Size'];
  sha256: Scalars['String'];
  contentType: Scalars['String'] | null;
  author: Scalars['ID'];
  createdAt: Scalars['DateTime'];
  deleted: Scalars['Boolean'];
  cursor: Scalars['Cursor'];
  /**
   * User metadata (at most 64 entries; counted as 64 in the complexity limit).
   */
  metadata: MetadataEntry[];
  downloadUrl: Scalars['String'] | null;
  /**
   * Each store's copy of this version's content (owners only).
   */
  replicas: Replica[];
}

export interface FileVersionConnection {
  /**
   * Information to aid in pagination.
   */
  pageInfo: PageInfo;
  /**
   * A list of edges.
   */
  edges: FileVersionEdge[];
  /**
   * A list of nodes.
   */
  nodes: FileVersion[];
}

/**
 * An edge in a connection.
 */
export interface FileVersionEdge {
  /**
   * The item at the end of the edge
   */
  node: FileVersion;
  /**
   * A cursor for use in pagination
   */
  cursor: Scalars['String'];
}

export interface HttpField {
  name: Scalars['String'];
  value: Scalars['String'];
}

export interface Member {
  userId: Scalars['ID'];
  role: Role;
}

export interface MetadataEntry {
  key: Scalars['String'];
  value: Scalars['String'];
}

export interface MetadataEntryInput {
  key: Scalars['String'];
  value: Scalars['String'];
}

export interface Mutation {
  /**
   * Creates a space; the caller becomes its owner.
   */
  createSpace: Space;
  /**
   * Adds or changes a member (owners only); a null role removes the member.
   */
  setMember: Space;
  /**
   * Replaces a space's settings: largest file, accepted content types and extensions
   * (owners only).
   */
  updateSpaceSettings: Space;
  /**
   * Starts a repair of the space's replication (owners only): the copies its versions
   * lack are queued, and every store's copy is checked against its checksum, at the
   * scrub's pace; what is missing or corrupt is copied again. Asking while a repair
   * runs answers that one.
   */
  repairSpace: ReplicationStatus;
  /**
   * Phase one of an upload: a pending version and a presigned URL to send the bytes to.
   */
  beginUpload: UploadTicket;
  /**
   * URLs for parts of a multipart upload, at most `uploads.max_part_urls` (100) at a
   * time: each pins its part's length and the SHA-256 given, and expires with
   * `uploads.url_ttl` (ask again for a fresh one). Parts may be sent in any order and
   * in parallel; a part sent twice counts as the last one stored.
   */
  uploadPartUrls: UploadPartUrl[];
  /**
   * Phase three: verifies the bytes and publishes the version. Idempotent. A
   * multipart upload is completed from the parts the store holds
   * (`UPLOAD_INCOMPLETE` with `extensions.missingParts` when some are missing), then
   * hashed whole: `UPLOAD_VERIFYING` (with `extensions.retryAfterMs`) while that takes
   * longer than `uploads.commit_wait`: commit again.
   */
  commitUpload: File;
  /**
   * Abandons a pending upload and deletes its bytes; false if it was already abandoned.
   */
  cancelUpload: Scalars['Boolean'];
  /**
   * A new version with a new name and/or metadata and the same content.
   */
  updateFile: File;
  /**
   * Deletes a file (creator or space owner only); returns the tombstone.
   */
  deleteFile: File;
  /**
   * Makes an old version current again (also undeletes a file).
   */
  restoreVersion: File;
  /**
   * Uploads a small file in one request (GraphQL multipart request spec).
   */
  uploadFile: File;
}

/**
 * Information about pagination in a connection
 */
export interface PageInfo {
  /**
   * When paginating backwards, are there more items?
   */
  hasPreviousPage: Scalars['Boolean'];
  /**
   * When paginating forwards, are there more items?
   */
  hasNextPage: Scalars['Boolean'];
  /**
   * When paginating backwards, the cursor to continue.
   */
  startCursor: Scalars['String'] | null;
  /**
   * When paginating forwards, the cursor to continue.
   */
  endCursor: Scalars['String'] | null;
}

export interface Query {
  /**
   * The authenticated caller.
   */
  me: User;
  /**
   * The spaces the caller belongs to, oldest first: at most `first` (default 100),
   * those after the space `after`.
   */
  spaces: Space[];
  /**
   * Where a space's replication stands, store by store (owners only): copies pending,
   * failed and OK, the oldest pending one and the lag. Reads every copy record of the
   * space.
   */
  replicationStatus: ReplicationStatus;
  /**
   * A space the caller belongs to; null otherwise.
   */
  space: Space | null;
  /**
   * The latest committed version of a file, or version `version`; null when there is
   * no such file (or version) the caller may see.
   */
  file: File | null;
  /**
   * Live files of a space ordered by name (case-insensitively unless the space is
   * case-sensitive), optionally under a name prefix (compared as names are).
   */
  files: FileConnection;
  /**
   * A file's committed versions, oldest first: at most `first` (default 100), those
   * numbered after `after`. `fileHistory` is the same as a connection, with
   * `pageInfo`.
   */
  fileVersions: FileVersion[];
  /**
   * A file's committed versions, oldest first, as a connection: `first` (default
   * 100) after the cursor `after`.
   */
  fileHistory: FileVersionConnection;
  /**
   * Incremental sync: every file changed after `since` (all files when omitted), each
   * once in its latest state, tombstones included, in change order.
   */
  changes: ChangePage;
  /**
   * An upload as it stands, for its uploader (the token): for a pending multipart
   * upload the parts the store holds and those still missing, so a client that
   * crashed or reloaded sends only what is missing.
   */
  uploadStatus: UploadStatus;
}

/**
 * One store's copy of a version's content.
 */
export interface Replica {
  /**
   * The store's id (`primary`: the server's own bucket or folder).
   */
  store: Scalars['String'];
  primary: Scalars['Boolean'];
  status: ReplicaStatus;
  /**
   * Failed attempts since the copy was queued (or last found bad).
   */
  attempts: Scalars['Int'];
  /**
   * Why the last attempt failed, or why the copy was queued again.
   */
  lastError: Scalars['String'] | null;
  updatedAt: Scalars['DateTime'];
}

/**
 * Where one store's copy of a version's content stands.
 */
export type ReplicaStatus =
  | 'PENDING'
  | 'OK'
  | 'FAILED'
  | 'REMOVING';
export const ReplicaStatusValues: readonly ReplicaStatus[] = ['PENDING', 'OK', 'FAILED', 'REMOVING'];

/**
 * A walk over a space's versions.
 */
export interface ReplicationJob {
  kind: ReplicationJobKind;
  startedAt: Scalars['DateTime'];
  done: Scalars['Boolean'];
}

export type ReplicationJobKind =
  | 'BACKFILL'
  | 'REPAIR';
export const ReplicationJobKindValues: readonly ReplicationJobKind[] = ['BACKFILL', 'REPAIR'];

/**
 * Whether a space copies its content to the replica stores.
 */
export type ReplicationMode =
  | 'DEFAULT'
  | 'ON'
  | 'OFF';
export const ReplicationModeValues: readonly ReplicationMode[] = ['DEFAULT', 'ON', 'OFF'];

/**
 * Where a space's replication stands (owners only).
 */
export interface ReplicationStatus {
  spaceId: Scalars['ID'];
  /**
   * Whether new content of the space is copied to the replica stores.
   */
  replicated: Scalars['Boolean'];
  stores: StoreReplicationStatus[];
  /**
   * The space's last backfill or repair, if any.
   */
  job: ReplicationJob | null;
}

export type Role =
  | 'OWNER'
  | 'EDITOR'
  | 'VIEWER';
export const RoleValues: readonly Role[] = ['OWNER', 'EDITOR', 'VIEWER'];

export interface Space {
  id: Scalars['ID'];
  name: Scalars['String'];
  /**
   * The caller's role in this space.
   */
  role: Role | null;
  createdBy: Scalars['ID'];
  createdAt: Scalars['DateTime'];
  /**
   * The cursor of the space's latest change: `changes(since: headCursor)` is empty now.
   */
  headCursor: Scalars['Cursor'];
  /**
   * The members, by user id: at most `first` (default 100), those after the user
   * `after`.
   */
  members: Member[];
  /**
   * The owners' inspector: the space's uploads as the metadata store holds them
   * (`PENDING`, then `COMMITTED` or `ABANDONED`), newest first, each beside the object
   * the blob store holds for it now. At most `first` (default 100), those after the
   * upload `after`. Owners only (`FORBIDDEN` otherwise). The AWS backend forgets a
   * finished upload a week after it expired.
   */
  uploads: UploadRecord[];
  /**
   * What files the space accepts (members may read it; owners change it with
   * `updateSpaceSettings`).
   */
  settings: SpaceSettings;
}

/**
 * The limits a space puts on its files. Empty lists accept everything.
 */
export interface SpaceSettings {
  /**
   * Largest file in bytes; null: only the server's own limit.
   */
  maxFileSize: Scalars['Size'] | null;
  /**
   * Accepted media types (`image/png`) and type ranges (`image/*`).
   */
  allowedContentTypes: Scalars['String'][];
  /**
   * Accepted extensions of a file name's last segment, without the dot (`md`).
   */
  allowedExtensions: Scalars['String'][];
  /**
   * Whether names that differ only in case are different files (`README.md` beside
   * `readme.md`). Off by default: names are unique ignoring case and look-alike
   * characters, so that the space maps onto a folder on every common file system.
   */
  caseSensitiveNames: Scalars['Boolean'];
  /**
   * Whether new content is copied to the server's replica stores (`DEFAULT`: as the
   * server's `replication.default` says; `replicationStatus` tells which).
   */
  replication: ReplicationMode;
}

/**
 * New settings for a space; they replace the old ones whole. Checked at `beginUpload`,
 * again at commit against the stored bytes, and on renames.
 */
export interface SpaceSettingsInput {
  /**
   * Largest file in bytes (at most the server's limit); null: no limit of the space's own.
   */
  maxFileSize?: Scalars['Size'] | null;
  /**
   * Accepted media types and type ranges; empty or null: any (uploads then need no type).
   */
  allowedContentTypes?: Scalars['String'][] | null;
  /**
   * Accepted extensions; empty or null: any.
   */
  allowedExtensions?: Scalars['String'][] | null;
  /**
   * Names that differ only in case are different files; null: as it is now. Can change
   * only before the space's first file.
   */
  caseSensitiveNames?: Scalars['Boolean'] | null;
  /**
   * Whether new content is copied to the replica stores; null: as it is now. Turning
   * it on copies the files already there too.
   */
  replication?: ReplicationMode | null;
}

/**
 * An object in the blob store.
 */
export interface StoredObject {
  key: Scalars['String'];
  size: Scalars['Size'];
  /**
   * Its SHA-256 (hex), when the store can say.
   */
  sha256: Scalars['String'] | null;
}

/**
 * One store's copies of a space, counted.
 */
export interface StoreReplicationStatus {
  store: Scalars['String'];
  primary: Scalars['Boolean'];
  /**
   * False for a store taken out of the configuration (its records are kept).
   */
  configured: Scalars['Boolean'];
  pending: Scalars['Int'];
  failed: Scalars['Int'];
  ok: Scalars['Int'];
  removing: Scalars['Int'];
  /**
   * When the oldest version not yet copied here was committed.
   */
  oldestPendingAt: Scalars['DateTime'] | null;
  /**
   * Seconds since then (0 when everything is copied).
   */
  lagSeconds: Scalars['Float'];
}

export interface Subscription {
  /**
   * Every committed change of a space, in seq order, each once. With `since`: first
   * every change after that cursor, then live ones; without: live ones from now. One
   * `READY` event (carrying the head cursor) comes once the replay is done and the live
   * listener is attached: from then on nothing is missed. With `fileIds`, only changes
   * of those files are sent (READY still comes). The subscription ends with an error
   * when the caller is removed from the space (`FORBIDDEN`) or falls too far behind
   * (`SLOW_SUBSCRIBER`); a server shutting down closes the websocket with 1001. Either
   * way, subscribe again with the cursor of the last event received.
   */
  changes: ChangeEvent;
  /**
   * The changes of one file, as `changes` with `fileIds: [id]`.
   */
  fileChanged: ChangeEvent;
}

export interface UpdateFileInput {
  /**
   * New name (a rename); omit to keep it.
   */
  name?: Scalars['String'] | null;
  /**
   * Replaces the metadata; omit to keep it.
   */
  metadata?: MetadataEntryInput[] | null;
}

/**
 * A part the store holds.
 */
export interface UploadedPart {
  partNumber: Scalars['Int'];
  size: Scalars['Size'];
  /**
   * Hex SHA-256 of the part, where the store says.
   */
  sha256: Scalars['String'] | null;
}

/**
 * How the client sends an upload's bytes.
 */
export type UploadMethod =
  | 'PUT'
  | 'POST'
  | 'MULTIPART';
export const UploadMethodValues: readonly UploadMethod[] = ['PUT', 'POST', 'MULTIPART'];

/**
 * A part the client is about to send.
 */
export interface UploadPartInput {
  /**
   * 1 to the ticket's `partCount`.
   */
  partNumber: Scalars['Int'];
  /**
   * Hex SHA-256 of the part's bytes: the URL pins it, and the store refuses other
   * bytes.
   */
  sha256: Scalars['String'];
}

/**
 * Where to send one part: `method` to `url` with `headers` exactly, `size` bytes.
 */
export interface UploadPartUrl {
  partNumber: Scalars['Int'];
  /**
   * The part's length, pinned by the URL.
   */
  size: Scalars['Size'];
  url: Scalars['String'];
  method: Scalars['String'];
  headers: HttpField[];
  expiresAt: Scalars['DateTime'];
}

export interface UploadRecord {
  uploadId: Scalars['ID'];
  fileId: Scalars['ID'];
  /**
   * The version this upload becomes (or became) when committed.
   */
  version: Scalars['Int'];
  name: Scalars['String'];
  /**
   * The declared size.
   */
  size: Scalars['Size'];
  /**
   * The declared SHA-256 (hex).
   */
  sha256: Scalars['String'];
  contentType: Scalars['String'] | null;
  author: Scalars['ID'];
  state: VersionState;
  /**
   * How the bytes are sent.
   */
  method: UploadMethod;
  /**
   * A multipart upload's number of parts.
   */
  partCount: Scalars['Int'] | null;
  createdAt: Scalars['DateTime'];
  /**
   * When the upload's URL stops working (a pending upload is abandoned after it).
   */
  expiresAt: Scalars['DateTime'];
  /**
   * The object stored under the upload's key; null when there is none (not yet sent,
   * or removed).
   */
  object: StoredObject | null;
}

/**
 * An upload as it stands: for a multipart one, the parts stored so far, so a client
 * that crashed or reloaded sends only the missing ones.
 */
export interface UploadStatus {
  uploadId: Scalars['ID'];
  fileId: Scalars['ID'];
  /**
   * The version the upload becomes (or became) when committed.
   */
  version: Scalars['Int'];
  state: VersionState;
  method: UploadMethod;
  size: Scalars['Size'];
  /**
   * The declared SHA-256 (hex).
   */
  sha256: Scalars['String'];
  partSize: Scalars['Size'] | null;
  partCount: Scalars['Int'] | null;
  /**
   * When the upload and its token expire.
   */
  expiresAt: Scalars['DateTime'];
  /**
   * The server is hashing the whole content (a commit is under way).
   */
  verifying: Scalars['Boolean'];
  /**
   * The parts stored, by number (empty unless pending and multipart).
   */
  parts: UploadedPart[];
  /**
   * The part numbers still to send (empty unless pending and multipart).
   */
  missingParts: Scalars['Int'][];
}

/**
 * How to send the bytes of an upload, and how to commit it.
 */
export interface UploadTicket {
  uploadId: Scalars['ID'];
  /**
   * Secret proving a commit or cancel comes from the uploader.
   */
  uploadToken: Scalars['String'];
  fileId: Scalars['ID'];
  /**
   * The version this upload becomes when committed.
   */
  version: Scalars['Int'];
  /**
   * Where to send the bytes; empty for a multipart upload (its parts go to the URLs
   * of `uploadPartUrls`).
   */
  url: Scalars['String'];
  /**
   * `PUT`, `POST` (a form: `formFields`, then the file), or `MULTIPART`.
   */
  method: Scalars['String'];
  /**
   * Headers the request must carry exactly.
   */
  headers: HttpField[];
  /**
   * Form fields of a presigned POST (empty for PUT).
   */
  formFields: HttpField[];
  /**
   * When `url` stops working (a multipart upload: when the upload expires).
   */
  expiresAt: Scalars['DateTime'];
  /**
   * A multipart upload's part size: every part but the last has exactly this many
   * bytes.
   */
  partSize: Scalars['Size'] | null;
  /**
   * A multipart upload's number of parts (1 to 10,000).
   */
  partCount: Scalars['Int'] | null;
}

export interface User {
  id: Scalars['ID'];
}

export type VersionState =
  | 'PENDING'
  | 'COMMITTED'
  | 'ABANDONED';
export const VersionStateValues: readonly VersionState[] = ['PENDING', 'COMMITTED', 'ABANDONED'];
