// Subscribes with the real `graphql-ws` client and prints one JSON line per thing that
// happens: {"next": result}, {"error": ...}, {"complete": true}. Exits once `count`
// change events (anything but READY) have arrived, or on error (exit code 1).
//
// Usage: node subscribe.mjs '{"url", "token", "query", "variables", "count"}'
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { url, token, query, variables, count } = JSON.parse(process.argv[2]);
const print = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});

let changes = 0;
const dispose = client.subscribe(
  { query, variables },
  {
    next: (result) => {
      print({ next: result });
      const event = Object.values(result.data ?? {})[0];
      if (event?.kind !== 'READY' && ++changes >= count) {
        dispose();
        client.dispose();
      }
    },
    error: (error) => {
      // A CloseEvent (connection refused or closed) or a list of GraphQL errors.
      const described =
        error && typeof error.code === 'number'
          ? { closeCode: error.code, reason: error.reason }
          : { errors: error };
      print({ error: described });
      client.dispose();
      process.exitCode = 1;
    },
    complete: () => print({ complete: true }),
  },
);
