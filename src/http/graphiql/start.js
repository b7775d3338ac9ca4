// A token may come in the page's fragment (`/graphiql#token=...`, never sent to the
// server in the URL); it then goes in the Authorization header and in the
// websocket's connection_init.
const token = new URLSearchParams(window.location.hash.slice(1)).get('token');
const url = (path, ws) => {
  const u = new URL(path, window.location.origin);
  if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
};
const fetcher = GraphiQL.createFetcher({
  url: url('/graphql'),
  subscriptionUrl: url('/graphql/ws', true),
  wsConnectionParams: token ? { authorization: 'Bearer ' + token } : {},
});
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultHeaders: token
      ? JSON.stringify({ Authorization: 'Bearer ' + token }, null, 2)
      : '{\n  "Authorization": "Bearer <paste a token>"\n}',
    defaultEditorToolsVisibility: true,
  })
);
