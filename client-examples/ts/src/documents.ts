// The GraphQL documents the library sends, each typed with its variables and result
// (picked from the generated schema types). test/documents.test.ts validates every one
// against the server's schema.graphql.
import type {
  ChangeEvent,
  ChangePage,
  File,
  FileVersion,
  Member,
  PageInfo,
  Role,
  Space,
  SpaceSettings,
  StoredObject,
  UploadRecord,
  UploadTicket,
  HttpField,
  BeginUploadInput,
  UploadPartInput,
  UploadPartUrl,
  UploadStatus,
  UploadedPart,
} from './schema.js';

/** A document with its result and variables types attached. */
export interface TypedDocument<TData, TVars> {
  readonly query: string;
  /** Never set: carries the types. */
  readonly __types?: (vars: TVars) => TData;
}

function doc<TData, TVars = Record<string, never>>(query: string): TypedDocument<TData, TVars> {
  return { query: query.replace(/\s+/g, ' ').trim() };
}

/** A file as the library hands it out (no URL: ask `downloadUrl` when needed). */
export type FileInfo = Pick<
  File,
  | 'id'
  | 'spaceId'
  | 'name'
  | 'version'
  | 'size'
  | 'sha256'
  | 'contentType'
  | 'creator'
  | 'createdAt'
  | 'updatedAt'
  | 'deleted'
  | 'cursor'
>;
const FILE_FIELDS = `fragment FileFields on File {
  id spaceId name version size sha256 contentType creator createdAt updatedAt deleted cursor
}`;

export type SpaceInfo = Pick<
  Space,
  'id' | 'name' | 'role' | 'createdBy' | 'createdAt' | 'headCursor'
>;
const SPACE_FIELDS = `fragment SpaceFields on Space { id name role createdBy createdAt headCursor }`;

export type VersionInfo = Pick<
  FileVersion,
  | 'fileId'
  | 'version'
  | 'kind'
  | 'state'
  | 'name'
  | 'size'
  | 'sha256'
  | 'contentType'
  | 'author'
  | 'createdAt'
  | 'deleted'
  | 'cursor'
>;

export type Change = Pick<
  ChangeEvent,
  'cursor' | 'kind' | 'spaceId' | 'fileId' | 'version' | 'actor' | 'at'
> & { file: FileInfo | null };

export type Ticket = Pick<
  UploadTicket,
  | 'uploadId'
  | 'uploadToken'
  | 'fileId'
  | 'version'
  | 'url'
  | 'method'
  | 'expiresAt'
  | 'partSize'
  | 'partCount'
> & {
  headers: Pick<HttpField, 'name' | 'value'>[];
  formFields: Pick<HttpField, 'name' | 'value'>[];
};

export type InspectedUpload = Omit<UploadRecord, 'object'> & {
  object: Pick<StoredObject, 'key' | 'size' | 'sha256'> | null;
};

export const ME = doc<{ me: { id: string } }>(`query Me { me { id } }`);

export const SPACES = doc<{ spaces: SpaceInfo[] }, { first?: number; after?: string | null }>(
  `query Spaces($first: Int, $after: ID) { spaces(first: $first, after: $after) { ...SpaceFields } }
   ${SPACE_FIELDS}`,
);

export const SPACE = doc<
  { space: (SpaceInfo & { settings: SpaceSettings }) | null },
  { id: string }
>(
  `query Space($id: ID!) { space(id: $id) { ...SpaceFields settings {
     maxFileSize allowedContentTypes allowedExtensions caseSensitiveNames } } }
   ${SPACE_FIELDS}`,
);

export const MEMBERS = doc<
  { space: { members: Member[] } | null },
  { id: string; first?: number; after?: string | null }
>(
  `query Members($id: ID!, $first: Int, $after: String) {
     space(id: $id) { members(first: $first, after: $after) { userId role } } }`,
);

export const CREATE_SPACE = doc<{ createSpace: SpaceInfo }, { name: string }>(
  `mutation CreateSpace($name: String!) { createSpace(name: $name) { ...SpaceFields } }
   ${SPACE_FIELDS}`,
);

export const SET_MEMBER = doc<
  { setMember: SpaceInfo },
  { spaceId: string; userId: string; role: Role | null }
>(
  `mutation SetMember($spaceId: ID!, $userId: ID!, $role: Role) {
     setMember(spaceId: $spaceId, userId: $userId, role: $role) { ...SpaceFields } }
   ${SPACE_FIELDS}`,
);

export const FILES = doc<
  { files: { nodes: FileInfo[]; pageInfo: Pick<PageInfo, 'hasNextPage' | 'endCursor'> } },
  { spaceId: string; prefix?: string | null; first?: number; after?: string | null }
>(
  `query Files($spaceId: ID!, $prefix: String, $first: Int, $after: String) {
     files(spaceId: $spaceId, prefix: $prefix, first: $first, after: $after) {
       nodes { ...FileFields } pageInfo { hasNextPage endCursor } } }
   ${FILE_FIELDS}`,
);

export const CHANGES = doc<
  { changes: Pick<ChangePage, 'nextCursor' | 'hasMore'> & { files: FileInfo[] } },
  { spaceId: string; since?: string | null; limit?: number }
>(
  `query Changes($spaceId: ID!, $since: Cursor, $limit: Int) {
     changes(spaceId: $spaceId, since: $since, limit: $limit) {
       files { ...FileFields } nextCursor hasMore } }
   ${FILE_FIELDS}`,
);

export const FILE = doc<
  { file: (FileInfo & { downloadUrl: string | null }) | null },
  { id: string; version?: number | null }
>(
  `query File($id: ID!, $version: Int) { file(id: $id, version: $version) {
     ...FileFields downloadUrl } }
   ${FILE_FIELDS}`,
);

export const HISTORY = doc<
  {
    fileHistory: {
      nodes: VersionInfo[];
      pageInfo: Pick<PageInfo, 'hasNextPage' | 'endCursor'>;
    };
  },
  { id: string; first?: number; after?: string | null }
>(
  `query History($id: ID!, $first: Int, $after: String) {
     fileHistory(id: $id, first: $first, after: $after) {
       nodes { fileId version kind state name size sha256 contentType author createdAt deleted
               cursor }
       pageInfo { hasNextPage endCursor } } }`,
);

export const BEGIN_UPLOAD = doc<{ beginUpload: Ticket }, { input: BeginUploadInput }>(
  `mutation BeginUpload($input: BeginUploadInput!) { beginUpload(input: $input) {
     uploadId uploadToken fileId version url method headers { name value }
     formFields { name value } expiresAt partSize partCount } }`,
);

export type PartUrl = Pick<UploadPartUrl, 'partNumber' | 'size' | 'url' | 'method'> & {
  headers: Pick<HttpField, 'name' | 'value'>[];
};

export const UPLOAD_PART_URLS = doc<
  { uploadPartUrls: PartUrl[] },
  { uploadId: string; uploadToken: string; parts: UploadPartInput[] }
>(
  `mutation UploadPartUrls($uploadId: ID!, $uploadToken: String!, $parts: [UploadPartInput!]!) {
     uploadPartUrls(uploadId: $uploadId, uploadToken: $uploadToken, parts: $parts) {
       partNumber size url method headers { name value } } }`,
);

export type UploadState = Pick<
  UploadStatus,
  'uploadId' | 'state' | 'size' | 'sha256' | 'partSize' | 'partCount' | 'missingParts'
> & { parts: Pick<UploadedPart, 'partNumber' | 'size'>[] };

export const UPLOAD_STATUS = doc<
  { uploadStatus: UploadState },
  { uploadId: string; uploadToken: string }
>(
  `query UploadStatus($uploadId: ID!, $uploadToken: String!) {
     uploadStatus(uploadId: $uploadId, uploadToken: $uploadToken) {
       uploadId state size sha256 partSize partCount missingParts parts { partNumber size } } }`,
);

export const COMMIT_UPLOAD = doc<
  { commitUpload: FileInfo },
  { uploadId: string; uploadToken: string }
>(
  `mutation CommitUpload($uploadId: ID!, $uploadToken: String!) {
     commitUpload(uploadId: $uploadId, uploadToken: $uploadToken) { ...FileFields } }
   ${FILE_FIELDS}`,
);

export const CANCEL_UPLOAD = doc<
  { cancelUpload: boolean },
  { uploadId: string; uploadToken: string }
>(
  `mutation CancelUpload($uploadId: ID!, $uploadToken: String!) {
     cancelUpload(uploadId: $uploadId, uploadToken: $uploadToken) }`,
);

export const RENAME = doc<
  { updateFile: FileInfo },
  { id: string; baseVersion: number; name: string }
>(
  `mutation Rename($id: ID!, $baseVersion: Int!, $name: String!) {
     updateFile(id: $id, baseVersion: $baseVersion, input: { name: $name }) { ...FileFields } }
   ${FILE_FIELDS}`,
);

export const DELETE = doc<{ deleteFile: FileInfo }, { id: string; baseVersion?: number | null }>(
  `mutation Delete($id: ID!, $baseVersion: Int) {
     deleteFile(id: $id, baseVersion: $baseVersion) { ...FileFields } }
   ${FILE_FIELDS}`,
);

export const RESTORE = doc<
  { restoreVersion: FileInfo },
  { id: string; version: number; baseVersion: number }
>(
  `mutation Restore($id: ID!, $version: Int!, $baseVersion: Int!) {
     restoreVersion(id: $id, version: $version, baseVersion: $baseVersion) { ...FileFields } }
   ${FILE_FIELDS}`,
);

export const UPLOADS = doc<
  { space: { uploads: InspectedUpload[] } | null },
  { id: string; first?: number; after?: string | null }
>(
  `query Uploads($id: ID!, $first: Int, $after: ID) { space(id: $id) {
     uploads(first: $first, after: $after) {
       uploadId fileId version name size sha256 contentType author state createdAt expiresAt
       object { key size sha256 } } } }`,
);

export const LIVE_CHANGES = doc<
  { changes: Change },
  { spaceId: string; since?: string | null; fileIds?: string[] | null }
>(
  `subscription Live($spaceId: ID!, $since: Cursor, $fileIds: [ID!]) {
     changes(spaceId: $spaceId, since: $since, fileIds: $fileIds) {
       cursor kind spaceId fileId version actor at file { ...FileFields } } }
   ${FILE_FIELDS}`,
);

/** Every document, for the test that validates them against the schema. */
export const ALL_DOCUMENTS = {
  ME,
  SPACES,
  SPACE,
  MEMBERS,
  CREATE_SPACE,
  SET_MEMBER,
  FILES,
  CHANGES,
  FILE,
  HISTORY,
  BEGIN_UPLOAD,
  UPLOAD_PART_URLS,
  UPLOAD_STATUS,
  COMMIT_UPLOAD,
  CANCEL_UPLOAD,
  RENAME,
  DELETE,
  RESTORE,
  UPLOADS,
  LIVE_CHANGES,
};
