// The library against a real server (started per suite on port 0), through real HTTP and
// websockets; a TCP proxy the test cuts stands for a dropped network.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { buildSchema, parse, validate } from 'graphql';

import {
  FilesyncClient as Client,
  FilesyncError,
  MemoryStore,
  fromGraphQLError,
  describeError,
  documents,
  hashBlob,
  syncSpace,
  type Change,
  type FilesyncClient,
  type ResumeStore,
  type UploadProgress,
} from '../src/index.js';
import { startProxy, startServer, type TestServer } from './server.js';

const text = (s: string) => new Blob([s], { type: 'text/plain' });

describe('documents', () => {
  test('every document the library sends is valid against schema.graphql', () => {
    const schema = buildSchema(
      readFileSync(new URL('../../../../schema.graphql', import.meta.url), 'utf8'),
    );
    for (const [name, doc] of Object.entries(documents.ALL_DOCUMENTS)) {
      const errors = validate(schema, parse(doc.query));
      assert.deepEqual(
        errors.map((e) => e.message),
        [],
        `${name} is not valid against the schema`,
      );
    }
  });

  test('server errors become typed values, with their hints', () => {
    const conflict = fromGraphQLError({
      message: 'conflict',
      extensions: { code: 'CONFLICT', currentVersion: 3, fileId: 'f' },
    });
    assert.equal(conflict.code, 'CONFLICT');
    assert.equal(conflict.currentVersion, 3);
    const unknown = fromGraphQLError({ message: 'x', extensions: { code: 'NEW_THING' } });
    assert.equal(unknown.code, 'UNKNOWN');
    assert.match(describeError(conflict).action, /Keep both/);
  });
});

describe('against a server', () => {
  let server: TestServer;
  let alice: FilesyncClient;
  let bob: FilesyncClient;
  let spaceId: string;

  before(async () => {
    server = await startServer();
    alice = await server.client('alice');
    bob = await server.client('bob');
    spaceId = (await alice.createSpace('shared')).id;
    await alice.setMember(spaceId, 'bob', 'EDITOR');
  });
  after(async () => {
    await alice?.close();
    await bob?.close();
    await server?.stop();
  });

  test('upload, download, rename, history, restore, remove', async () => {
    const v1 = await alice.upload(text('one'), { spaceId, name: 'notes/a.txt' });
    assert.equal(v1.version, 1);
    assert.equal(v1.sha256, await hashBlob(text('one')));
    const v2 = await alice.upload(text('two'), {
      spaceId,
      name: 'notes/a.txt',
      fileId: v1.id,
      baseVersion: 1,
    });
    assert.equal(await (await bob.download(v1.id)).text(), 'two');
    assert.equal(await (await bob.download(v1.id, { version: 1 })).text(), 'one');
    const renamed = await bob.rename(v1.id, v2.version, 'notes/b.txt');
    assert.equal(renamed.name, 'notes/b.txt');
    const history = await alice.history(v1.id);
    assert.deepEqual(
      history.map((v) => [v.version, v.kind, v.name]),
      [
        [1, 'CREATED', 'notes/a.txt'],
        [2, 'UPDATED', 'notes/a.txt'],
        [3, 'UPDATED', 'notes/b.txt'],
      ],
    );
    const restored = await alice.restore(v1.id, 1, 3);
    assert.equal(restored.version, 4);
    assert.equal(await (await alice.download(v1.id)).text(), 'one');
    const gone = await alice.remove(v1.id, 4);
    assert.equal(gone.deleted, true);
    assert.equal((await alice.files(spaceId, { prefix: 'notes/' })).length, 0);
  });

  test('a write on a stale version is a typed CONFLICT carrying the current version', async () => {
    const file = await alice.upload(text('base'), { spaceId, name: 'conflict.txt' });
    await bob.upload(text('bob'), {
      spaceId,
      name: 'conflict.txt',
      fileId: file.id,
      baseVersion: 1,
    });
    await assert.rejects(
      alice.upload(text('alice'), {
        spaceId,
        name: 'conflict.txt',
        fileId: file.id,
        baseVersion: 1,
      }),
      (e: unknown) => {
        assert.ok(e instanceof FilesyncError);
        assert.equal(e.code, 'CONFLICT');
        assert.equal(e.currentVersion, 2);
        return true;
      },
    );
    await assert.rejects(alice.rename(file.id, 1, 'x.txt'), {
      code: 'CONFLICT',
      currentVersion: 2,
    });
  });

  test('a 50 MB upload reports progress; cancelled halfway, nothing is published', async () => {
    const size = 50 * 1024 * 1024;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) & 0xff;
    const blob = new Blob([bytes]);
    // Whole: progress through every phase, and the bytes come back intact.
    const seen: UploadProgress[] = [];
    const whole = await alice.upload(blob, {
      spaceId,
      name: 'big/whole.bin',
      onProgress: (p) => seen.push(p),
    });
    const phases = [...new Set(seen.map((p) => p.phase))];
    assert.deepEqual(phases, ['hashing', 'sending', 'committing']);
    const sent = seen.filter((p) => p.phase === 'sending').map((p) => p.loaded);
    assert.ok(sent.length > 10, `${sent.length} sending events`);
    assert.deepEqual(
      sent,
      [...sent].sort((a, b) => a - b),
    );
    assert.equal(sent[sent.length - 1], size);
    const back = await bob.download(whole.id);
    assert.equal(back.size, size);
    assert.equal(await hashBlob(back), whole.sha256);

    // Cancelled once half is sent.
    const controller = new AbortController();
    await assert.rejects(
      alice.upload(blob, {
        spaceId,
        name: 'big/cancelled.bin',
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'sending' && p.loaded >= size / 2) controller.abort();
        },
      }),
      { code: 'ABORTED' },
    );
    const names = (await alice.files(spaceId, { prefix: 'big/' })).map((f) => f.name);
    assert.deepEqual(names, ['big/whole.bin']);
    const uploads = await alice.inspectUploads(spaceId);
    const cancelled = uploads.find((u) => u.name === 'big/cancelled.bin');
    assert.equal(cancelled?.state, 'ABANDONED');
    assert.equal(cancelled?.object, null, 'its bytes are removed');
  });

  test('the inspector is for owners only', async () => {
    await assert.rejects(bob.inspectUploads(spaceId), { code: 'FORBIDDEN' });
  });

  test('live changes across a dropped socket in a burst of 100: each exactly once', async () => {
    const proxy = await startProxy(server.url);
    const watcher = await server.client('bob', proxy.url);
    const space = await alice.createSpace('burst');
    await alice.setMember(space.id, 'bob', 'VIEWER');
    const controller = new AbortController();
    const events: Change[] = [];
    let readies = 0;
    const statuses: string[] = [];
    const done = (async () => {
      for await (const event of watcher.liveChanges(space.id, {
        since: (await alice.space(space.id))!.headCursor,
        signal: controller.signal,
        minDelayMs: 50,
        onStatus: (s) => statuses.push(s),
      })) {
        if (event.kind === 'READY') {
          readies++;
          continue;
        }
        events.push(event);
        // Cut the connection twice in the middle of the burst.
        if (events.length === 30 || events.length === 70) proxy.cut();
        if (events.length === 100) controller.abort();
      }
    })();
    while (readies === 0) await new Promise((r) => setTimeout(r, 10));
    for (let i = 0; i < 100; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          alice.upload(text(`file ${i + j}`), { spaceId: space.id, name: `f${i + j}.txt` }),
        ),
      );
    }
    await done;
    await watcher.close();
    await proxy.close();
    const names = events.map((e) => e.file!.name);
    assert.equal(names.length, 100);
    assert.equal(new Set(names).size, 100, 'no change twice');
    assert.equal(new Set(events.map((e) => e.cursor)).size, 100);
    assert.ok(readies >= 3, `resubscribed after each cut (READY ${readies} times)`);
    assert.ok(statuses.includes('offline'));
    // In commit order: the cursors' sequence numbers only grow.
    const seqs = events.map((e) => e.file!.cursor);
    assert.deepEqual(seqs, [...seqs].sort(compareCursors));
  });

  test('close() ends live iterators instead of reconnecting', async () => {
    const carol = await server.client('alice');
    const space = await carol.createSpace('closing');
    const events: string[] = [];
    const done = (async () => {
      for await (const event of carol.liveChanges(space.id, { since: space.headCursor })) {
        events.push(event.kind);
        if (event.kind === 'READY') await carol.close();
      }
    })();
    await done;
    assert.deepEqual(events, ['READY']);
    assert.throws(() => carol.websocket(), { code: 'ABORTED' });
  });

  test('syncSpace keeps a map current and resumes from the stored cursor', async () => {
    const space = await alice.createSpace('synced');
    const store = new MemoryStore();
    const a = await alice.upload(text('a'), { spaceId: space.id, name: 'a.txt' });
    // Bob is not a member yet: syncing stops with a typed error.
    const first = syncSpace(bob, space.id, store);
    await assert.rejects(first.ready, (e: unknown) => {
      assert.ok(e instanceof FilesyncError);
      assert.ok(['FORBIDDEN', 'NOT_FOUND'].includes(e.code), e.code);
      return true;
    });
    await first.stopped;
    await alice.setMember(space.id, 'bob', 'VIEWER');
    const synced = syncSpace(bob, space.id, store);
    await synced.ready;
    assert.deepEqual(
      [...synced.files.values()].map((f) => f.name),
      ['a.txt'],
    );
    await alice.upload(text('b'), { spaceId: space.id, name: 'b.txt' });
    await alice.remove(a.id);
    await until(() => synced.files.size === 1 && [...synced.files.values()][0]!.name === 'b.txt');
    synced.stop();
    await synced.stopped;
    // Offline meanwhile; the next run starts from the saved cursor and catches up.
    await alice.upload(text('c'), { spaceId: space.id, name: 'c.txt' });
    const again = syncSpace(bob, space.id, store);
    await again.ready;
    assert.deepEqual([...again.files.values()].map((f) => f.name).sort(), ['b.txt', 'c.txt']);
    again.stop();
    await again.stopped;
  });
});

describe('rate limits', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      FILESYNC_LIMITS__MUTATIONS_PER_SECOND: '0.5',
      FILESYNC_LIMITS__MUTATION_BURST: '2',
    });
  });
  after(() => server?.stop());

  test('RATE_LIMITED comes as a typed error with its retry hint', async () => {
    const carol = await server.client('carol');
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => carol.createSpace(`s${i}`)),
    );
    const refused = results.filter((r) => r.status === 'rejected');
    assert.ok(refused.length > 0);
    const error = (refused[0] as PromiseRejectedResult).reason;
    assert.ok(error instanceof FilesyncError);
    assert.equal(error.code, 'RATE_LIMITED');
    assert.ok((error.retryAfterSeconds ?? 0) >= 1);
    assert.equal(error.transient, true);
    await carol.close();
  });
});

async function until(check: () => boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Cursors of one space compare by the sequence number they carry (its last 8 bytes:
 * the test peeks into the server's opaque format). */
function compareCursors(a: string, b: string): number {
  const seq = (c: string) => BigInt('0x' + Buffer.from(c, 'base64url').toString('hex').slice(-16));
  return seq(a) < seq(b) ? -1 : seq(a) > seq(b) ? 1 : 0;
}

describe('multipart uploads', () => {
  let server: TestServer;
  let alice: FilesyncClient;
  let spaceId: string;
  const MIB = 1024 * 1024;
  // Three parts of 8 MiB and a short fourth.
  const size = 3 * 8 * MIB + 12345;
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 997) bytes[i] = (i * 31) & 0xff;
  const blob = new Blob([bytes]);

  /** A client whose fetch counts part PUTs and can be made to break after `breakAfter`. */
  const counting = async (breakAfter = Infinity) => {
    const counts = { parts: 0, inFlightMax: 0 };
    let inFlight = 0;
    const wrapped: typeof fetch = async (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (!url.includes('/part/')) return fetch(input, init);
      if (counts.parts >= breakAfter) throw new TypeError('fetch failed: the network is down');
      counts.parts++;
      inFlight++;
      counts.inFlightMax = Math.max(counts.inFlightMax, inFlight);
      try {
        return await fetch(input, init);
      } finally {
        inFlight--;
      }
    };
    const client = new Client({
      url: server.url,
      token: await server.token('alice'),
      fetch: wrapped,
    });
    return { client, counts };
  };

  before(async () => {
    server = await startServer({ FILESYNC_UPLOADS__MULTIPART_THRESHOLD: String(8 * MIB) });
    alice = await server.client('alice');
    spaceId = (await alice.createSpace('large')).id;
  });
  after(async () => {
    await alice?.close();
    await server?.stop();
  });

  test('above the threshold the parts go in parallel, and the file comes back whole', async () => {
    const { client, counts } = await counting();
    const sent: number[] = [];
    const file = await client.upload(blob, {
      spaceId,
      name: 'video.bin',
      resume: null,
      onProgress: (p) => p.phase === 'sending' && sent.push(p.loaded),
    });
    assert.equal(file.size, size);
    assert.equal(counts.parts, 4);
    assert.ok(counts.inFlightMax > 1, `parts in parallel (${counts.inFlightMax} at most)`);
    assert.equal(sent[sent.length - 1], size);
    const back = await alice.download(file.id);
    assert.equal(await hashBlob(back), file.sha256);
    await client.close();
  });

  test('an upload cut off between parts resumes with only the missing ones', async () => {
    const saved = new Map<string, string>();
    const resume: ResumeStore = {
      getItem: (k) => saved.get(k) ?? null,
      setItem: (k, v) => void saved.set(k, v),
      removeItem: (k) => void saved.delete(k),
    };
    // The network goes after two parts: the upload fails, and is remembered.
    const first = await counting(2);
    await assert.rejects(
      first.client.upload(blob, { spaceId, name: 'backup.img', resume, concurrency: 1 }),
      { code: 'NETWORK' },
    );
    assert.equal(first.counts.parts, 2);
    assert.equal(saved.size, 1, 'the upload is remembered');
    await first.client.close();
    // A new client (a reloaded page) with the same store sends the two parts left.
    const second = await counting();
    const file = await second.client.upload(blob, { spaceId, name: 'backup.img', resume });
    assert.equal(second.counts.parts, 2);
    assert.equal(file.size, size);
    assert.equal(saved.size, 0, 'forgotten once committed');
    assert.equal(await hashBlob(await alice.download(file.id)), file.sha256);
    await second.client.close();
  });

  test('a browser form POST publishes the file', async () => {
    const small = new Blob(['sent as a form'], { type: 'text/plain' });
    const file = await alice.upload(small, { spaceId, name: 'form.txt', method: 'POST' });
    assert.equal(file.size, small.size);
    assert.equal(file.contentType, 'text/plain');
    assert.equal(await (await alice.download(file.id)).text(), 'sent as a form');
  });

  test('cancelled mid-way, a multipart upload publishes nothing and leaves no parts', async () => {
    const controller = new AbortController();
    await assert.rejects(
      alice.upload(blob, {
        spaceId,
        name: 'cancelled.bin',
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'sending' && p.loaded >= 8 * MIB) controller.abort();
        },
      }),
      { code: 'ABORTED' },
    );
    const uploads = await alice.inspectUploads(spaceId);
    const cancelled = uploads.find((u) => u.name === 'cancelled.bin');
    assert.equal(cancelled?.state, 'ABANDONED');
    assert.equal(cancelled?.object, null);
    assert.ok(!(await alice.files(spaceId)).some((f) => f.name === 'cancelled.bin'));
  });
});
