export { FilesyncClient, type ClientOptions } from './client.js';
export { FilesyncError, describeError, fromGraphQLError, type ErrorCode } from './errors.js';
export { liveChanges, type LiveEvent, type LiveOptions, type LiveStatus } from './live.js';
export {
  syncSpace,
  MemoryStore,
  IndexedDBStore,
  type SpaceStore,
  type SyncedSpace,
  type SyncOptions,
} from './sync.js';
export {
  hashBlob,
  defaultResumeStore,
  type ResumeStore,
  type UploadOptions,
  type UploadProgress,
  type DownloadOptions,
} from './transfer.js';
export type {
  Change,
  FileInfo,
  InspectedUpload,
  PartUrl,
  SpaceInfo,
  UploadState,
  Ticket,
  TypedDocument,
  VersionInfo,
} from './documents.js';
export * as documents from './documents.js';
export type * from './schema.js';
