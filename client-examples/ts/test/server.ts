// Starts the real server (the binary cargo built; FILESYNC_BIN overrides) on port 0 with a
// fresh data folder, and mints tokens with `filesync token`.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import WebSocket from 'ws';

import { FilesyncClient } from '../src/index.js';

const run = promisify(execFile);

export const BIN =
  process.env.FILESYNC_BIN ??
  fileURLToPath(new URL('../../../../target/debug/filesync', import.meta.url));

export interface TestServer {
  url: string;
  dataDir: string;
  /** Stops the server (SIGTERM: websockets close with 1001) and keeps its data. */
  kill(): Promise<void>;
  /** Starts it again on the same address and data. */
  restart(): Promise<void>;
  token(user: string): Promise<string>;
  client(user: string, url?: string): Promise<FilesyncClient>;
  stop(): Promise<void>;
}

export async function startServer(
  env: Record<string, string> = {},
  args: string[] = [],
): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'filesync-ts-'));
  let child: ChildProcess;
  const launch = async (listen: string) => {
    child = spawn(BIN, ['serve', '--listen', listen, '--data-dir', dataDir, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, RUST_LOG: 'warn', ...env },
    });
    return new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        const m = /listening on (http:\/\/\S+)/.exec(line);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`the server exited (${code})`)));
    });
  };
  const url = await launch('127.0.0.1:0');
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  const token = async (user: string) =>
    (await run(BIN, ['token', '--user', user, '--data-dir', dataDir])).stdout.trim();
  return {
    url,
    dataDir,
    token,
    kill,
    restart: async () => {
      await kill();
      await launch(new URL(url).host);
    },
    client: async (user, at = url) =>
      new FilesyncClient({ url: at, token: await token(user), webSocketImpl: WebSocket }),
    stop: async () => {
      await kill();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A TCP proxy in front of the server whose connections the test can cut: a real drop. */
export async function startProxy(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(Number(port), hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    /** Every open connection reset, as a network failure would. */
    cut() {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
