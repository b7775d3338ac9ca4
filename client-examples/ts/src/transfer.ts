import { sha256 } from '@noble/hashes/sha256';
import { bytesToHex } from '@noble/hashes/utils';

import { checkAborted, type FilesyncClient } from './client.js';
import {
  BEGIN_UPLOAD,
  CANCEL_UPLOAD,
  COMMIT_UPLOAD,
  type FileInfo,
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
}

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
  const { beginUpload: ticket } = await client.request(
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
      },
    },
    signal,
  );
  try {
    onProgress?.({ phase: 'sending', loaded: 0, total });
    await send(
      client,
      ticket,
      blob,
      (loaded) => onProgress?.({ phase: 'sending', loaded, total }),
      signal,
    );
    checkAborted(signal);
  } catch (e) {
    // Abandon the pending version. The store may have committed it already (the bytes
    // landed and its notification won, or the request broke after the last byte): then
    // the cancel is refused, and the upload is reported as what it is, published.
    const keys = { uploadId: ticket.uploadId, uploadToken: ticket.uploadToken };
    const cancelled = await client.request(CANCEL_UPLOAD, keys).then(
      () => true,
      () => false,
    );
    if (!cancelled) {
      const committed = await client.request(COMMIT_UPLOAD, keys).catch(() => null);
      if (committed) return committed.commitUpload;
    }
    throw e;
  }
  // From here on the upload is the server's: a cancel no longer applies, and the commit is
  // idempotent, so a dropped connection is retried.
  onProgress?.({ phase: 'committing', loaded: total, total });
  for (let attempt = 0; ; attempt++) {
    try {
      return (
        await client.request(COMMIT_UPLOAD, {
          uploadId: ticket.uploadId,
          uploadToken: ticket.uploadToken,
        })
      ).commitUpload;
    } catch (e) {
      if (!(e instanceof FilesyncError) || e.code !== 'NETWORK' || attempt >= 4) throw e;
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
  if (ticket.method.toUpperCase() !== 'PUT') {
    throw new FilesyncError('BAD_INPUT', `this client sends PUT uploads, not ${ticket.method}`);
  }
  const headers = Object.fromEntries(ticket.headers.map((h) => [h.name, h.value]));
  if (typeof XMLHttpRequest !== 'undefined') {
    return sendXhr(ticket.url, headers, blob, onProgress, signal);
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
  let response: Response;
  try {
    response = await client.fetch(ticket.url, {
      method: 'PUT',
      headers: { ...headers, 'content-length': String(blob.size) },
      body,
      signal: signal ?? null,
      duplex: 'half',
    } as RequestInit);
  } catch (e) {
    if (signal?.aborted) throw aborted(signal);
    throw new FilesyncError('NETWORK', `the upload failed: ${String(e)}`, { cause: e });
  }
  if (!response.ok) throw await storageError(response);
}

function sendXhr(
  url: string,
  headers: Record<string, string>,
  blob: Blob,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    for (const [name, value] of Object.entries(headers)) {
      // The browser sets these itself (and refuses them from scripts).
      if (!['content-length', 'host'].includes(name.toLowerCase()))
        xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
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
    xhr.send(blob);
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
