// The GraphQL-over-HTTP audit suite (graphql-http's server audits) against a running
// server: one JSON line per audit. Run by tests/api/http_audit.rs.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
for (const { id, name, status, reason } of results) {
  console.log(JSON.stringify({ id, name, status, reason }));
}
