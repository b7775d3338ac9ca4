import { sha256 } from '@noble/hashes/sha256';
import { bytesToHex } from '@noble/hashes/utils';

import { checkAborted, type FilesyncClient } from './client.js';
import {
  BEGIN_UPLOAD,
  CANCEL_UPLOAD,
  COMMIT_UPLOAD,
  UPLOAD_PART_URLS,
  UPLOAD_STATUS,
  type FileInfo,
  type PartUrl,
  type Ticket,
} from './documents.js';
import { FilesyncError, aborted, fromGraphQLError } from './errors.js';

/** Where an upload stands: hashing the blob, sending its bytes, or committing. */
export interface UploadProgress {
  phase: 'hashing' | 'sending' | 'committing';
  /** Bytes done in this phase. */
  loaded: number;
  total: number;
}

export interface UploadOptions {
  spaceId: string;
  /** The file's name (a path: `docs/report.pdf`). */
  name: string;
  /** Upload a new version of this file; omitted: a new file. */
  fileId?: string;
  /** The version this upload replaces; the server answers `CONFLICT` if the file moved on. */
  baseVersion?: number;
  /** Defaults to the blob's `type` when it has one. */
  contentType?: string;
  onProgress?: (progress: UploadProgress) => void;
  /** Cancels: the pending upload is abandoned and nothing is published. */
  signal?: AbortSignal;
  /**
   * `MULTIPART` asks for parts whatever the size, `POST` for a browser form's upload (a
   * `multipart/form-data` POST whose signed policy pins the file; at most 5 GiB); omitted,
   * the server decides (parts above its threshold, 64 MiB by default; else a PUT).
   */
  method?: 'PUT' | 'POST' | 'MULTIPART';
  /** Parts sent at once in a multipart upload (default 4). */
  concurrency?: number;
  /**
   * Where a multipart upload under way is remembered, so that `upload` of the same blob to
   * the same place after a crash or a page reload sends only the parts the server does not
   * have. Defaults to `localStorage` in a browser and to memory elsewhere; `null` turns
   * resuming off.
   */
  resume?: ResumeStore | null;
}

/** A small key-value store for multipart uploads under way (`localStorage` fits). */
export interface ResumeStore {
  getItem(key: string): string | null | Promise<string | null>;
  setItem(key: string, value: string): void | Promise<void>;
  removeItem(key: string): void | Promise<void>;
}

const memoryResume = new Map<string, string>();

/** `localStorage` where there is one, a map in memory otherwise. */
export function defaultResumeStore(): ResumeStore {
  if (typeof localStorage !== 'undefined') return localStorage;
  return {
    getItem: (key) => memoryResume.get(key) ?? null,
    setItem: (key, value) => void memoryResume.set(key, value),
    removeItem: (key) => void memoryResume.delete(key),
  };
}

/** Commit refusals after which the upload can never publish: it is cancelled. */
const FINAL_COMMIT_REFUSALS: string[] = [
  'CONFLICT',
  'CHECKSUM_MISMATCH',
  'FORBIDDEN',
  'PAYLOAD_TOO_LARGE',
  'BAD_INPUT',
];

/** Parts hashed and given URLs together. */
const URL_BATCH = 16;
/** Sends of one part before the upload fails (it stays resumable). */
const PART_ATTEMPTS = 3;

/** Slices a blob is sent in where there is no XMLHttpRequest (progress comes per slice). */
const SEND_SLICE = 256 * 1024;

/** Reads a blob in slices of this many bytes while hashing (never all of it at once). */
const HASH_SLICE = 4 * 1024 * 1024;

/** The hex SHA-256 of a blob, computed slice by slice. */
export async function hashBlob(
  blob: Blob,
  onProgress?: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<string> {
  const hash = sha256.create();
  for (let offset = 0; offset < blob.size; offset += HASH_SLICE) {
    checkAborted(signal);
    const slice = blob.slice(offset, Math.min(blob.size, offset + HASH_SLICE));
    hash.update(new Uint8Array(await slice.arrayBuffer()));
    onProgress?.(Math.min(blob.size, offset + HASH_SLICE));
  }
  return bytesToHex(hash.digest());
}

/**
 * The three-phase upload: hash the blob (streaming), `beginUpload` (a pending version and a
 * presigned URL), send the bytes straight to storage, `commitUpload` (the server verifies
 * and publishes). A cancel before the commit abandons the pending upload: nothing is
 * published and its bytes are removed.
 */
export async function upload(
  client: FilesyncClient,
  blob: Blob,
  options: UploadOptions,
): Promise<FileInfo> {
  const { signal, onProgress } = options;
  const total = blob.size;
  onProgress?.({ phase: 'hashing', loaded: 0, total });
  const digest = await hashBlob(
    blob,
    (loaded) => onProgress?.({ phase: 'hashing', loaded, total }),
    signal,
  );
  checkAborted(signal);
  const contentType = options.contentType ?? (blob.type || undefined);
  const resume = options.resume === undefined ? defaultResumeStore() : options.resume;
  const resumeKey = [
    'filesync-upload',
    client.url,
    // Only its own user resumes an upload (another user of the same browser or process
    // with a token of the same space would otherwise publish under the first one's name).
    tokenSubject(await client.token()),
    options.spaceId,
    options.fileId ?? '',
    options.baseVersion ?? '',
    options.name,
    total,
    digest,
  ].join('|');
  let ticket = resume ? await resumable(client, resume, resumeKey, signal) : null;
  if (!ticket) {
    ticket = (
      await client.request(
        BEGIN_UPLOAD,
        {
          input: {
            spaceId: options.spaceId,
            fileId: options.fileId ?? null,
            name: options.name,
            size: total,
            sha256: digest,
            contentType: contentType ?? null,
            baseVersion: options.baseVersion ?? null,
            method: options.method ?? null,
          },
        },
        signal,
      )
    ).beginUpload;
    if (ticket.method === 'MULTIPART') await resume?.setItem(resumeKey, JSON.stringify(ticket));
  }
  const keys = { uploadId: ticket.uploadId, uploadToken: ticket.uploadToken };
  const forget = async () => {
    if (ticket.method === 'MULTIPART') await resume?.removeItem(resumeKey);
  };
  try {
    onProgress?.({ phase: 'sending', loaded: 0, total });
    const report = (loaded: number) => onProgress?.({ phase: 'sending', loaded, total });
    if (ticket.method === 'MULTIPART') {
      await sendParts(client, ticket, blob, report, options.concurrency ?? 4, signal);
    } else {
      await send(client, ticket, blob, report, signal);
    }
    checkAborted(signal);
  } catch (e) {
    // A multipart upload cut off by the network is kept: the next `upload` of this blob
    // sends only the parts still missing.
    if (
      ticket.method === 'MULTIPART' &&
      resume &&
      e instanceof FilesyncError &&
      e.code === 'NETWORK'
    ) {
      throw e;
    }
    await forget();
    // Abandon the pending version. The store may have committed a PUT already (the bytes
    // landed and its notification won, or the request broke after the last byte): then
    // the cancel is refused, and the upload is reported as what it is, published. A
    // multipart upload only commits when asked: never after a cancel.
    const cancelled = await client.request(CANCEL_UPLOAD, keys).then(
      () => true,
      () => false,
    );
    if (!cancelled && ticket.method !== 'MULTIPART') {
      const committed = await client.request(COMMIT_UPLOAD, keys).catch(() => null);
      if (committed) return committed.commitUpload;
    }
    throw e;
  }
  // From here on the upload is the server's: a cancel no longer applies, and the commit is
  // idempotent, so a dropped connection is retried, and a commit that finds the server
  // still verifying a multipart upload's content asks again.
  onProgress?.({ phase: 'committing', loaded: total, total });
  for (let attempt = 0; ; attempt++) {
    try {
      const file = (await client.request(COMMIT_UPLOAD, keys)).commitUpload;
      await forget();
      return file;
    } catch (e) {
      if (e instanceof FilesyncError && e.code === 'UPLOAD_VERIFYING') {
        await new Promise((r) => setTimeout(r, e.retryAfterMs ?? 1000));
        continue;
      }
      const transient = e instanceof FilesyncError && e.transient;
      if (!transient || attempt >= 4) {
        // Refused for good (a conflict, other bytes, no right to write any more): give
        // the pending upload up rather than leave it holding one of the user's pending
        // slots. A transient failure keeps it (a multipart upload resumes).
        if (e instanceof FilesyncError && FINAL_COMMIT_REFUSALS.includes(e.code)) {
          await forget();
          await client.request(CANCEL_UPLOAD, keys).catch(() => undefined);
        }
        throw e;
      }
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}

/** The user a token names (its `sub`), or the token's own digest when it is not a JWT. */
function tokenSubject(token: string): string {
  try {
    const payload = token.split('.')[1] ?? '';
    const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
    const sub = (JSON.parse(json) as { sub?: unknown }).sub;
    if (typeof sub === 'string') return sub;
  } catch {
    // Not a JWT.
  }
  return bytesToHex(sha256(new TextEncoder().encode(token)));
}

/** The multipart upload remembered under `key`, if the server still has it pending. */
async function resumable(
  client: FilesyncClient,
  resume: ResumeStore,
  key: string,
  signal?: AbortSignal,
): Promise<Ticket | null> {
  const saved = await resume.getItem(key);
  if (!saved) return null;
  let ticket: Ticket;
  try {
    ticket = JSON.parse(saved) as Ticket;
  } catch {
    await resume.removeItem(key);
    return null;
  }
  const status = await client
    .request(UPLOAD_STATUS, { uploadId: ticket.uploadId, uploadToken: ticket.uploadToken }, signal)
    .catch((e: unknown) => {
      if (e instanceof FilesyncError && e.transient) throw e;
      return null;
    });
  if (status?.uploadStatus.state === 'PENDING') return ticket;
  await resume.removeItem(key);
  return null;
}

/**
 * Sends the parts the server does not hold yet (all of them for a new upload), `concurrency`
 * at a time, in batches whose digests are computed (one part in memory at a time) and
 * whose URLs are asked for together. Progress counts the parts stored plus the bytes of
 * those in flight. A part whose send breaks is sent again, with a fresh URL when its URL
 * expired.
 */
async function sendParts(
  client: FilesyncClient,
  ticket: Ticket,
  blob: Blob,
  onProgress: (loaded: number) => void,
  concurrency: number,
  signal?: AbortSignal,
): Promise<void> {
  const keys = { uploadId: ticket.uploadId, uploadToken: ticket.uploadToken };
  const partSize = ticket.partSize;
  if (!partSize) throw new FilesyncError('UNKNOWN', 'a multipart ticket without a part size');
  const status = (await client.request(UPLOAD_STATUS, keys, signal)).uploadStatus;
  const range = (n: number) => [(n - 1) * partSize, Math.min(blob.size, n * partSize)] as const;
  const missing = status.missingParts;
  let done = blob.size - missing.reduce((sum, n) => sum + range(n)[1] - range(n)[0], 0);
  const inFlight = new Map<number, number>();
  const report = () => {
    let loaded = done;
    for (const l of inFlight.values()) loaded += l;
    onProgress(loaded);
  };
  report();
  // One part failing stops the others.
  const stop = new AbortController();
  const onAbort = () => stop.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort);
  try {
    for (let i = 0; i < missing.length; i += URL_BATCH) {
      const batch = missing.slice(i, i + URL_BATCH);
      const parts: { partNumber: number; sha256: string }[] = [];
      for (const n of batch) {
        checkAborted(signal);
        const [start, end] = range(n);
        const bytes = new Uint8Array(await blob.slice(start, end).arrayBuffer());
        parts.push({ partNumber: n, sha256: bytesToHex(sha256(bytes)) });
      }
      const urls = (await client.request(UPLOAD_PART_URLS, { ...keys, parts }, signal))
        .uploadPartUrls;
      const queue = [...urls];
      const worker = async () => {
        for (let url = queue.shift(); url; url = queue.shift()) {
          const n = url.partNumber;
          const [start, end] = range(n);
          const digest = parts.find((p) => p.partNumber === n)!.sha256;
          await sendPart(
            client,
            keys,
            url,
            digest,
            blob.slice(start, end),
            (l) => {
              inFlight.set(n, l);
              report();
            },
            stop.signal,
          );
          inFlight.delete(n);
          done += end - start;
          report();
        }
      };
      await Promise.all(
        Array.from({ length: Math.min(concurrency, queue.length) }, () =>
          worker().catch((e: unknown) => {
            stop.abort(e);
            throw e;
          }),
        ),
      );
    }
  } catch (e) {
    if (signal?.aborted) throw aborted(signal);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** One part, sent again when the connection breaks or its URL has expired. */
async function sendPart(
  client: FilesyncClient,
  keys: { uploadId: string; uploadToken: string },
  url: PartUrl,
  digest: string,
  part: Blob,
  onProgress: (loaded: number) => void,
  signal: AbortSignal,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const headers = Object.fromEntries(url.headers.map((h) => [h.name, h.value]));
      await sendBlob(client, url.url, headers, part, onProgress, signal);
      return;
    } catch (e) {
      if (signal.aborted || attempt >= PART_ATTEMPTS || !(e instanceof FilesyncError)) throw e;
      if (e.code === 'UPLOAD_EXPIRED') {
        const fresh = await client.request(UPLOAD_PART_URLS, {
          ...keys,
          parts: [{ partNumber: url.partNumber, sha256: digest }],
        });
        url = fresh.uploadPartUrls[0]!;
      } else if (e.code !== 'NETWORK') {
        throw e;
      }
      await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    }
  }
}

/** Sends the bytes as the ticket says (a PUT with exactly its headers). */
async function send(
  client: FilesyncClient,
  ticket: Ticket,
  blob: Blob,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const method = ticket.method.toUpperCase();
  if (method === 'POST') return sendForm(client, ticket, blob, onProgress, signal);
  if (method !== 'PUT') {
    throw new FilesyncError('BAD_INPUT', `this client sends PUT and POST uploads, not ${method}`);
  }
  const headers = Object.fromEntries(ticket.headers.map((h) => [h.name, h.value]));
  return sendBlob(client, ticket.url, headers, blob, onProgress, signal);
}

/** A browser form's upload: the ticket's fields in order, then the file as `file`. */
async function sendForm(
  client: FilesyncClient,
  ticket: Ticket,
  blob: Blob,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  const form = new FormData();
  for (const field of ticket.formFields) form.append(field.name, field.value);
  form.append('file', blob, 'file');
  if (typeof XMLHttpRequest !== 'undefined') {
    return sendXhr(ticket.url, {}, form, onProgress, signal, 'POST', blob.size);
  }
  await store(client, ticket.url, { method: 'POST', body: form }, signal);
  onProgress(blob.size);
}

/** A PUT of `blob` to `url` with exactly `headers`, counted as it is sent. */
async function sendBlob(
  client: FilesyncClient,
  url: string,
  headers: Record<string, string>,
  blob: Blob,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  if (typeof XMLHttpRequest !== 'undefined') {
    return sendXhr(url, headers, blob, onProgress, signal);
  }
  // No XMLHttpRequest (Node): a streamed body read in slices, counted as it is sent.
  let loaded = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (loaded >= blob.size) {
        controller.close();
        return;
      }
      const end = Math.min(blob.size, loaded + SEND_SLICE);
      const chunk = new Uint8Array(await blob.slice(loaded, end).arrayBuffer());
      controller.enqueue(chunk);
      loaded = end;
      onProgress(loaded);
    },
  });
  const init = {
    method: 'PUT',
    headers: { ...headers, 'content-length': String(blob.size) },
    body,
    duplex: 'half',
  } as RequestInit;
  await store(client, url, init, signal);
}

/** A request that stores bytes (no XMLHttpRequest): its failures as typed errors. */
async function store(
  client: FilesyncClient,
  url: string,
  init: RequestInit,
  signal?: AbortSignal,
): Promise<void> {
  let response: Response;
  try {
    response = await client.fetch(url, { ...init, signal: signal ?? null });
  } catch (e) {
    if (signal?.aborted) throw aborted(signal);
    throw new FilesyncError('NETWORK', `the upload failed: ${String(e)}`, { cause: e });
  }
  if (!response.ok) throw await storageError(response);
}

function sendXhr(
  url: string,
  headers: Record<string, string>,
  body: Blob | FormData,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
  method: 'PUT' | 'POST' = 'PUT',
  size?: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) {
      // The browser sets these itself (and refuses them from scripts).
      if (!['content-length', 'host'].includes(name.toLowerCase()))
        xhr.setRequestHeader(name, value);
    }
    // A form's progress counts its fields too: capped at the file's size.
    xhr.upload.onprogress = (e) =>
      onProgress(size === undefined ? e.loaded : Math.min(size, e.loaded));
    const onAbort = () => xhr.abort();
    signal?.addEventListener('abort', onAbort);
    const finish = (error?: FilesyncError) => {
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    };
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) return finish();
      finish(await storageError(new Response(xhr.responseText, { status: xhr.status })));
    };
    xhr.onerror = () => finish(new FilesyncError('NETWORK', 'the upload failed'));
    xhr.onabort = () => finish(aborted(signal));
    xhr.send(body);
  });
}

/** A refused transfer: the blob endpoint's JSON error (same codes), or S3's XML. */
async function storageError(response: Response): Promise<FilesyncError> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as {
      errors?: { message?: string; extensions?: { code?: string } }[];
    };
    const first = body.errors?.[0];
    if (first?.extensions?.code) return fromGraphQLError(first, response.status);
  } catch {
    // Not JSON: S3 answers XML.
  }
  const code =
    response.status === 413
      ? 'PAYLOAD_TOO_LARGE'
      : response.status === 507
        ? 'STORAGE_FULL'
        : response.status === 403 || response.status === 410
          ? 'UPLOAD_EXPIRED'
          : response.status >= 500
            ? 'INTERNAL'
            : 'BAD_INPUT';
  return new FilesyncError(code, `storage refused the transfer (${response.status})`, {
    status: response.status,
  });
}

export interface DownloadOptions {
  /** An older version; omitted: the current one. */
  version?: number;
  onProgress?: (loaded: number, total: number) => void;
  signal?: AbortSignal;
}

/**
 * A file's content, verified against its SHA-256 (`CORRUPT_DOWNLOAD` otherwise). A broken
 * connection is resumed with `Range` from the bytes already received (with a fresh URL),
 * up to three times.
 */
export async function download(
  client: FilesyncClient,
  fileId: string,
  options: DownloadOptions = {},
): Promise<Blob> {
  const { signal, onProgress } = options;
  const chunks: Uint8Array[] = [];
  let hash = sha256.create();
  let loaded = 0;
  let info: { size: number; sha256: string; contentType: string | null } | undefined;
  for (let attempt = 0; ; attempt++) {
    checkAborted(signal);
    const file = await client.file(fileId, options.version);
    if (!file || !file.downloadUrl) throw new FilesyncError('NOT_FOUND', 'no such file');
    if (info && info.sha256 !== file.sha256) {
      throw new FilesyncError('CONFLICT', 'the file changed during the download', {
        currentVersion: file.version,
      });
    }
    info = file;
    try {
      const response = await client.fetch(file.downloadUrl, {
        headers: loaded > 0 ? { range: `bytes=${loaded}-` } : {},
        signal: signal ?? null,
      });
      const resumedAt = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
      if (loaded > 0 && response.status === 416 && loaded === file.size) {
        break; // It broke right at the end: everything is here.
      }
      if (
        loaded > 0 &&
        (response.status === 200 || (response.status === 206 && Number(resumedAt?.[1]) !== loaded))
      ) {
        // The whole body again (or not from where it stopped): start over.
        if (response.status === 206) {
          await response.body?.cancel();
          loaded = 0;
          chunks.length = 0;
          hash = sha256.create();
          continue;
        }
        chunks.length = 0;
        loaded = 0;
        hash = sha256.create();
      } else if (!response.ok) {
        throw await storageError(response);
      }
      const reader = response.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        hash.update(value);
        loaded += value.byteLength;
        onProgress?.(loaded, file.size);
      }
      break;
    } catch (e) {
      if (signal?.aborted) throw aborted(signal);
      if (e instanceof FilesyncError && e.code !== 'NETWORK') throw e;
      if (attempt >= 3) throw new FilesyncError('NETWORK', `the download failed: ${String(e)}`);
    }
  }
  if (loaded !== info.size || bytesToHex(hash.digest()) !== info.sha256) {
    throw new FilesyncError('CORRUPT_DOWNLOAD', 'the downloaded bytes do not match the file');
  }
  return new Blob(chunks as BlobPart[], { type: info.contentType ?? '' });
}
