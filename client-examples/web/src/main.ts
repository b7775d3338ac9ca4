// Filesync in the browser: sign in, spaces and members, a live file list by folder,
// uploads with progress and cancel, history and restore, conflicts as a choice, and the
// owners' inspector of uploads. Plain DOM on @filesync/client.
import {
  FilesyncClient,
  FilesyncError,
  IndexedDBStore,
  describeError,
  syncSpace,
  type FileInfo,
  type InspectedUpload,
  type LiveStatus,
  type Role,
  type SpaceInfo,
  type SyncedSpace,
} from '@filesync/client';

import { clear, conflictName, formatSize, formatTime, h } from './dom.js';

type Tab = 'files' | 'members' | 'inspector';

interface Session {
  user: string;
  token: string;
}

interface Upload {
  id: number;
  /** Where it goes: fixed when it starts, whatever the page shows meanwhile. */
  client: FilesyncClient;
  space: SpaceInfo;
  user: string;
  name: string;
  phase: string;
  loaded: number;
  total: number;
  controller: AbortController;
  error?: string;
}

/** The API's origin: this page's, unless whoever deployed the app named another in
 * `<meta name="filesync-server">` (it must allow this origin: CORS). Never from the URL:
 * a link could otherwise send the token someone pastes to a server of its choosing. */
const server = (
  document.querySelector<HTMLMetaElement>('meta[name="filesync-server"]')?.content ||
  location.origin
).replace(/\/+$/, '');
const SESSION_KEY = `filesync.session:${server}`;

const state = {
  session: null as Session | null,
  client: null as FilesyncClient | null,
  spaces: [] as SpaceInfo[],
  space: null as SpaceInfo | null,
  synced: null as SyncedSpace | null,
  status: 'connecting' as LiveStatus,
  folder: '',
  tab: 'files' as Tab,
  uploads: new Map<number, Upload>(),
  inspector: [] as InspectedUpload[],
  inspectorTimer: 0,
  /** Who made each file's latest change, as live events tell it. */
  actors: new Map<string, string>(),
  store: null as IndexedDBStore | null,
};
let nextUpload = 1;

const root = document.getElementById('app')!;

// ---------------------------------------------------------------------------------------
// Shell: header, banner, messages, the dialog.

const banner = h('div', { class: 'banner', role: 'status', 'aria-live': 'polite', hidden: true });
const messages = h('div', { class: 'messages', role: 'alert', 'aria-live': 'assertive' });
const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' });

function showError(error: unknown, context?: string) {
  const { title, action } = describeError(error);
  const code = error instanceof FilesyncError ? error.code : 'UNKNOWN';
  const item = h(
    'div',
    { class: 'message error', 'data-code': code },
    h('strong', {}, context ? `${context}: ${title}` : title),
    action ? h('span', {}, ` ${action}`) : null,
    h('button', { class: 'link', onclick: () => item.remove(), 'aria-label': 'Dismiss' }, '×'),
  );
  messages.append(item);
  setTimeout(() => item.remove(), 15_000);
  if (code === 'UNAUTHENTICATED') signOut();
}

function notice(text: string) {
  const item = h('div', { class: 'message' }, text);
  messages.append(item);
  setTimeout(() => item.remove(), 4_000);
}

/** A modal dialog; resolves with the value of the button pressed (`null`: dismissed). A
 * `required` choice has no Close and ignores Escape: closing it must not pick for you. */
function ask(
  title: string,
  body: Node[],
  buttons: { label: string; value: string; primary?: boolean }[],
  required = false,
): Promise<string | null> {
  return new Promise((resolve) => {
    const form = h(
      'form',
      { method: 'dialog' },
      h('h2', { id: 'dialog-title' }, title),
      ...body,
      h(
        'div',
        { class: 'buttons' },
        ...buttons.map((b) =>
          h('button', { value: b.value, class: b.primary ? 'primary' : '' }, b.label),
        ),
        required ? null : h('button', { value: '', formnovalidate: true }, 'Close'),
      ),
    );
    clear(dialog, form);
    dialog.returnValue = '';
    const escape = (e: Event) => {
      if (required) e.preventDefault();
    };
    dialog.addEventListener('cancel', escape);
    dialog.addEventListener(
      'close',
      () => {
        dialog.removeEventListener('cancel', escape);
        resolve(dialog.returnValue || null);
      },
      { once: true },
    );
    dialog.showModal();
  });
}

// ---------------------------------------------------------------------------------------
// Sign in.

async function start() {
  document.body.append(dialog);
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      const session = JSON.parse(saved) as Session;
      await signIn(session.token);
      return;
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }
  await renderSignIn();
}

async function renderSignIn(error?: string) {
  const token = h('textarea', { id: 'token', rows: 3, required: true, autocomplete: 'off' });
  const tokenForm = h(
    'form',
    {
      class: 'card',
      onsubmit: (e: Event) => {
        e.preventDefault();
        void signIn(token.value.trim()).catch((err) => renderSignIn(describeError(err).title));
      },
    },
    h('h2', {}, 'Sign in'),
    h('label', { for: 'token' }, 'Bearer token'),
    token,
    h('button', { class: 'primary' }, 'Sign in'),
  );
  const devForm = h('div', {});
  clear(
    root,
    h('header', { class: 'bar' }, h('h1', {}, 'Filesync')),
    messages,
    h(
      'main',
      { class: 'signin' },
      error ? h('p', { class: 'message error', role: 'alert' }, error) : null,
      tokenForm,
      devForm,
    ),
  );
  // The development sign-in, when the server offers it.
  const dev = await fetch(`${server}/auth/dev-sign-in`).catch(() => null);
  if (dev?.ok) {
    const user = h('input', { id: 'dev-user', required: true, autocomplete: 'username' });
    clear(
      devForm,
      h(
        'form',
        {
          class: 'card',
          onsubmit: async (e: Event) => {
            e.preventDefault();
            const res = await fetch(`${server}/auth/dev-sign-in`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ user: user.value }),
            });
            const body = (await res.json()) as {
              token?: string;
              errors?: { message: string }[];
            };
            if (body.token) await signIn(body.token);
            else await renderSignIn(body.errors?.[0]?.message ?? 'sign-in failed');
          },
        },
        h('h2', {}, 'Development sign-in'),
        h('p', { class: 'hint' }, 'This server lets anyone sign in as anyone: for development.'),
        h('label', { for: 'dev-user' }, 'User id'),
        user,
        h('button', { class: 'primary' }, 'Sign in as this user'),
      ),
    );
  }
}

async function signIn(token: string) {
  const client = new FilesyncClient({ url: server, token });
  const user = await client.me();
  state.session = { user, token };
  state.client = client;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  await loadSpaces();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('space');
  const space = state.spaces.find((s) => s.id === wanted) ?? state.spaces[0];
  renderShell();
  if (space) openSpace(space);
}

function signOut() {
  // Uploads stop, and what this browser kept of the user's spaces is deleted.
  for (const item of state.uploads.values()) item.controller.abort();
  state.uploads.clear();
  state.synced?.stop();
  const store = state.store;
  state.store = null;
  if (store && state.session) {
    const name = storeName(state.session.user);
    void store.close().then(() => IndexedDBStore.delete(name));
  }
  void state.client?.close();
  state.session = null;
  state.client = null;
  state.space = null;
  sessionStorage.removeItem(SESSION_KEY);
  void renderSignIn();
}

// ---------------------------------------------------------------------------------------
// Spaces.

async function loadSpaces() {
  state.spaces = await state.client!.spaces();
}

const spaceList = h('ul', { class: 'spaces' });
const spacePanel = h('section', { class: 'space', 'aria-live': 'off' });

function renderShell() {
  const name = h('input', { id: 'new-space', required: true, maxlength: 200 });
  clear(
    root,
    h(
      'header',
      { class: 'bar' },
      h('h1', {}, 'Filesync'),
      h('span', { class: 'who' }, `Signed in as ${state.session!.user}`),
      h('button', { onclick: signOut }, 'Sign out'),
    ),
    banner,
    messages,
    h(
      'div',
      { class: 'layout' },
      h(
        'nav',
        { 'aria-label': 'Spaces' },
        h('h2', {}, 'Spaces'),
        spaceList,
        h(
          'form',
          {
            class: 'inline',
            onsubmit: async (e: Event) => {
              e.preventDefault();
              try {
                const space = await state.client!.createSpace(name.value.trim());
                name.value = '';
                await loadSpaces();
                openSpace(space);
              } catch (err) {
                showError(err, 'Cannot create the space');
              }
            },
          },
          h('label', { for: 'new-space' }, 'New space'),
          name,
          h('button', {}, 'Create'),
        ),
        h(
          'button',
          {
            class: 'link',
            onclick: async () => {
              await loadSpaces().catch((e) => showError(e));
              renderSpaceList();
            },
          },
          'Refresh spaces',
        ),
      ),
      h('main', { id: 'main' }, spacePanel),
    ),
  );
  renderSpaceList();
  if (!state.space) clear(spacePanel, h('p', {}, 'Create a space, or ask to be added to one.'));
}

function renderSpaceList() {
  clear(
    spaceList,
    ...state.spaces.map((space) =>
      h(
        'li',
        {},
        h(
          'button',
          {
            class: 'link',
            'aria-current': state.space?.id === space.id ? 'page' : undefined,
            onclick: () => openSpace(space),
          },
          space.name,
        ),
        h('span', { class: 'role' }, ` ${space.role?.toLowerCase() ?? ''}`),
      ),
    ),
  );
}

function storeName(user: string) {
  return `filesync:${server}:${user}`;
}

function openSpace(space: SpaceInfo) {
  state.synced?.stop();
  state.space = space;
  state.folder = '';
  state.tab = 'files';
  state.actors.clear();
  history.replaceState(null, '', `#space=${space.id}`);
  document.body.dataset.ready = 'false';
  state.store ??= new IndexedDBStore(storeName(state.session!.user));
  // Events of a space no longer open (still queued when it was left) change nothing.
  const mine = () => state.synced === synced;
  const synced: SyncedSpace = syncSpace(state.client!, space.id, state.store, {
    onChange: (_file, event) => {
      if (!mine()) return;
      if (event?.actor && event.fileId) state.actors.set(event.fileId, event.actor);
      scheduleRender();
    },
    onReady: () => {
      if (!mine()) return;
      document.body.dataset.ready = 'true';
      scheduleRender();
    },
    onStatus: (status) => {
      if (mine()) setStatus(status);
    },
    onError: (error) => {
      if (!mine()) return;
      showError(error, `Live updates of ${space.name} stopped`);
      setStatus('offline');
    },
  });
  state.synced = synced;
  renderSpaceList();
  renderSpace();
}

function setStatus(status: LiveStatus) {
  // Once offline, the banner stays until the subscription is live again (reconnecting
  // is not being back).
  const offline = status === 'offline' || (status === 'connecting' && state.status === 'offline');
  state.status = offline ? 'offline' : status;
  banner.hidden = !offline;
  banner.textContent = offline ? 'Offline: changes will appear once the connection is back.' : '';
  document.body.dataset.live = status;
}

// ---------------------------------------------------------------------------------------
// A space: tabs.

function isOwner() {
  return state.space?.role === 'OWNER';
}
function canWrite() {
  return state.space?.role === 'OWNER' || state.space?.role === 'EDITOR';
}

const panel = h('div', { role: 'tabpanel', id: 'panel' });

function renderSpace() {
  const space = state.space!;
  const tabs: [Tab, string][] = [
    ['files', 'Files'],
    ['members', 'Members'],
  ];
  if (isOwner()) tabs.push(['inspector', 'Inspector']);
  clear(
    spacePanel,
    h('h2', {}, space.name),
    h(
      'div',
      { role: 'tablist', 'aria-label': 'Space views' },
      ...tabs.map(([tab, label]) =>
        h(
          'button',
          {
            role: 'tab',
            id: `tab-${tab}`,
            'aria-selected': state.tab === tab ? 'true' : 'false',
            'aria-controls': 'panel',
            onclick: () => {
              state.tab = tab;
              renderSpace();
            },
          },
          label,
        ),
      ),
    ),
    panel,
  );
  panel.setAttribute('aria-labelledby', `tab-${state.tab}`);
  clearInterval(state.inspectorTimer);
  if (state.tab === 'files') renderFiles();
  else if (state.tab === 'members') void renderMembers();
  else {
    void refreshInspector();
    state.inspectorTimer = window.setInterval(() => void refreshInspector(), 1000);
  }
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (state.tab === 'files' && state.space) renderFileRows();
  });
}

// ---------------------------------------------------------------------------------------
// Files.

const crumbs = h('nav', { 'aria-label': 'Folder', class: 'crumbs' });
const uploadList = h('ul', { class: 'uploads', 'aria-label': 'Uploads' });
const fileBody = h('tbody', {});
const caption = h('caption', {});

function renderFiles() {
  const input = h('input', {
    type: 'file',
    multiple: true,
    id: 'choose',
    class: 'visually-hidden',
  });
  input.addEventListener('change', () => {
    uploadFiles([...(input.files ?? [])]);
    input.value = '';
  });
  const drop = h(
    'div',
    { class: 'dropzone' },
    h('p', {}, 'Drop files here to upload them to this folder, or '),
    input,
    h('label', { for: 'choose', class: 'button' }, 'Choose files'),
  );
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    uploadFiles([...(e.dataTransfer?.files ?? [])]);
  });
  clear(
    panel,
    crumbs,
    canWrite() ? drop : h('p', { class: 'hint' }, 'You can read this space (viewer).'),
    uploadList,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'files' },
        caption,
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            h('th', { scope: 'col' }, 'Name'),
            h('th', { scope: 'col', class: 'num' }, 'Size'),
            h('th', { scope: 'col', class: 'num wide' }, 'Version'),
            h('th', { scope: 'col', class: 'wide' }, 'By'),
            h('th', { scope: 'col', class: 'wide' }, 'Updated'),
            h('th', { scope: 'col' }, 'Actions'),
          ),
        ),
        fileBody,
      ),
    ),
  );
  renderUploads();
  renderFileRows();
}

/** The open folder's subfolders and files. */
function listing(): { folders: string[]; files: FileInfo[] } {
  const folders = new Set<string>();
  const files: FileInfo[] = [];
  for (const file of state.synced?.files.values() ?? []) {
    if (!file.name.startsWith(state.folder)) continue;
    const rest = file.name.slice(state.folder.length);
    const slash = rest.indexOf('/');
    if (slash >= 0) folders.add(rest.slice(0, slash));
    else files.push(file);
  }
  const byName = (a: string, b: string) => a.localeCompare(b, undefined, { sensitivity: 'base' });
  return {
    folders: [...folders].sort(byName),
    files: files.sort((a, b) => byName(a.name, b.name)),
  };
}

function renderFileRows() {
  const parts = state.folder.split('/').filter(Boolean);
  clear(
    crumbs,
    h('button', { class: 'link', onclick: () => openFolder('') }, state.space!.name),
    ...parts.flatMap((part, i) => [
      ' / ',
      h(
        'button',
        { class: 'link', onclick: () => openFolder(parts.slice(0, i + 1).join('/') + '/') },
        part,
      ),
    ]),
  );
  const { folders, files } = listing();
  caption.textContent = `${files.length} files and ${folders.length} folders in /${state.folder}`;
  const rows: Node[] = folders.map((folder) =>
    h(
      'tr',
      { class: 'folder' },
      h(
        'td',
        {},
        h(
          'button',
          {
            class: 'link folder',
            onclick: () => openFolder(`${state.folder}${folder}/`),
            'aria-label': `Open folder ${folder}`,
          },
          `${folder}/`,
        ),
      ),
      h('td', { class: 'num' }),
      h('td', { class: 'num wide' }),
      h('td', { class: 'wide' }),
      h('td', { class: 'wide' }),
      h('td', {}),
    ),
  );
  const kept = new Map<string, { key: string; row: HTMLElement }>();
  for (const file of files) {
    // Rows are rebuilt only when what they show changed (1,000 rows, one change).
    const key = `${file.version}|${file.name}|${state.actors.get(file.id)}|${state.folder}|${state.space!.role}`;
    const cached = rowCache.get(file.id);
    const row = cached?.key === key ? cached.row : fileRow(file);
    kept.set(file.id, { key, row });
    rows.push(row);
  }
  rowCache = kept;
  if (rows.length === 0) {
    rows.push(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'Nothing here yet.')));
  }
  fileBody.replaceChildren(...rows);
}

let rowCache = new Map<string, { key: string; row: HTMLElement }>();

function fileRow(file: FileInfo): HTMLElement {
  const short = file.name.slice(state.folder.length);
  const action = (label: string, run: () => void) =>
    h('button', { onclick: run, 'aria-label': `${label} ${short}` }, label);
  const text = isText(file);
  return h(
    'tr',
    { 'data-file-id': file.id, 'data-version': file.version, 'data-name': file.name },
    h('td', { class: 'name' }, short),
    h('td', { class: 'num' }, formatSize(file.size)),
    h('td', { class: 'num wide' }, file.version),
    h('td', { class: 'wide' }, state.actors.get(file.id) ?? file.creator),
    h('td', { class: 'wide' }, h('time', { datetime: file.updatedAt }, formatTime(file.updatedAt))),
    h(
      'td',
      { class: 'actions' },
      action('Download', () => void downloadFile(file)),
      canWrite() && text ? action('Edit', () => void editFile(file)) : null,
      canWrite() ? action('Rename', () => void renameFile(file)) : null,
      action('History', () => void showHistory(file)),
      canWrite() ? action('Delete', () => void deleteFile(file)) : null,
    ),
  );
}

function isText(file: FileInfo) {
  const type = file.contentType ?? '';
  return (
    file.size <= 1024 * 1024 &&
    (type.startsWith('text/') || /\.(txt|md|json|csv|ya?ml|toml|html|css|js|ts)$/i.test(file.name))
  );
}

function openFolder(folder: string) {
  state.folder = folder;
  renderFileRows();
}

function current(id: string): FileInfo | undefined {
  return state.synced?.files.get(id);
}

function byName(name: string): FileInfo | undefined {
  const key = name.toLowerCase();
  for (const file of state.synced?.files.values() ?? []) {
    if (file.name.toLowerCase() === key) return file;
  }
  return undefined;
}

// Uploads.

function uploadFiles(files: File[]) {
  for (const file of files) {
    const name = state.folder + file.name;
    const existing = byName(name);
    void uploadOne(file, name, existing?.id, existing?.version);
  }
}

/** Uploads `blob` as `name` (a new version of `fileId` on `baseVersion` when given); a
 * `CONFLICT` becomes a choice. */
async function uploadOne(
  blob: Blob,
  name: string,
  fileId?: string,
  baseVersion?: number,
  to?: { client: FilesyncClient; space: SpaceInfo; user: string },
): Promise<void> {
  const item: Upload = {
    id: nextUpload++,
    client: to?.client ?? state.client!,
    space: to?.space ?? state.space!,
    user: to?.user ?? state.session!.user,
    name,
    phase: 'waiting',
    loaded: 0,
    total: blob.size,
    controller: new AbortController(),
  };
  state.uploads.set(item.id, item);
  renderUploads();
  try {
    const file = await item.client.upload(blob, {
      spaceId: item.space.id,
      name,
      fileId,
      baseVersion,
      signal: item.controller.signal,
      onProgress: (p) => {
        item.phase = p.phase;
        item.loaded = p.loaded;
        updateUpload(item);
      },
    });
    state.uploads.delete(item.id);
    renderUploads();
    if (item.controller.signal.aborted) notice(`${file.name} was already published`);
  } catch (e) {
    state.uploads.delete(item.id);
    renderUploads();
    if (item.client.closed) return; // Signed out meanwhile.
    if (e instanceof FilesyncError && e.code === 'ABORTED') return notice(`Cancelled ${name}`);
    if (e instanceof FilesyncError && e.code === 'CONFLICT') {
      return resolveConflict(blob, name, item, e.fileId ?? fileId);
    }
    showError(e, `Cannot upload ${name}`);
  }
}

/** A `CONFLICT`: the file (or the file that took the name) as it is now, and a choice. */
async function resolveConflict(
  blob: Blob,
  name: string,
  to: { client: FilesyncClient; space: SpaceInfo; user: string },
  fileId?: string,
) {
  const now = fileId ? await to.client.file(fileId).catch(() => null) : null;
  const where = to.space.id === state.space?.id ? '' : ` (in ${to.space.name})`;
  const choice = await ask(
    'Someone changed this file meanwhile',
    [
      h(
        'p',
        {},
        now
          ? `${now.name}${where} is at version ${now.version} now, by someone else. What should happen to yours?`
          : `${name}${where} was taken by someone else meanwhile. What should happen to yours?`,
      ),
    ],
    [
      { label: 'Keep both', value: 'both', primary: true },
      ...(now ? [{ label: `Overwrite version ${now.version}`, value: 'overwrite' }] : []),
      { label: 'Discard mine', value: 'discard' },
    ],
    true,
  );
  // Dismissed anyway (the browser lets a second Escape through): keep both, losing nothing.
  if (choice === 'both' || choice === null) {
    await uploadOne(blob, conflictName(name, to.user), undefined, undefined, to);
  } else if (choice === 'overwrite' && now) {
    // On the version now current, under its name now (a rename meanwhile stays).
    await uploadOne(blob, now.name, now.id, now.version, to);
  } else {
    notice(`Discarded your changes to ${name}`);
  }
}

const progressBars = new Map<number, { bar: HTMLProgressElement; text: HTMLElement }>();
const cancelButtons = new Map<number, HTMLButtonElement>();

function renderUploads() {
  progressBars.clear();
  cancelButtons.clear();
  clear(
    uploadList,
    ...[...state.uploads.values()].map((item) => {
      const bar = h('progress', {
        max: Math.max(item.total, 1),
        value: item.loaded,
        'aria-label': `Upload of ${item.name}`,
      });
      const text = h('span', { class: 'phase' });
      progressBars.set(item.id, { bar, text });
      const cancel = h(
        'button',
        { onclick: () => item.controller.abort(), 'aria-label': `Cancel upload of ${item.name}` },
        'Cancel',
      );
      cancelButtons.set(item.id, cancel);
      const elsewhere = item.space.id === state.space?.id ? '' : ` (in ${item.space.name})`;
      const li = h(
        'li',
        { 'data-upload': item.name },
        h('span', { class: 'name' }, item.name + elsewhere),
        bar,
        text,
        cancel,
      );
      updateUpload(item);
      return li;
    }),
  );
}

function updateUpload(item: Upload) {
  const ui = progressBars.get(item.id);
  if (!ui) return;
  ui.bar.value = item.loaded;
  const pct = item.total ? Math.floor((item.loaded / item.total) * 100) : 100;
  ui.text.textContent = `${item.phase} ${pct}%`;
  // Once committing, the upload is the server's: there is nothing left to cancel.
  const cancel = cancelButtons.get(item.id);
  if (cancel) cancel.disabled = item.phase === 'committing';
}

// Row actions.

async function downloadFile(file: FileInfo, version?: number) {
  try {
    const blob = await state.client!.download(file.id, { version });
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: file.name.split('/').pop() ?? 'download' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    showError(e, `Cannot download ${file.name}`);
  }
}

async function editFile(file: FileInfo) {
  let content: string;
  try {
    content = await (await state.client!.download(file.id, { version: file.version })).text();
  } catch (e) {
    return showError(e, `Cannot open ${file.name}`);
  }
  const base = file.version;
  const area = h('textarea', { id: 'editor', rows: 12, class: 'editor' });
  area.value = content;
  const choice = await ask(
    `Edit ${file.name}`,
    [h('label', { for: 'editor' }, `Version ${base}`), area],
    [{ label: 'Save', value: 'save', primary: true }],
  );
  if (choice !== 'save') return;
  const blob = new Blob([area.value], { type: file.contentType ?? 'text/plain' });
  await uploadOne(blob, file.name, file.id, base);
}

async function renameFile(file: FileInfo) {
  const input = h('input', { id: 'rename', required: true, value: file.name });
  const choice = await ask(
    `Rename ${file.name}`,
    [h('label', { for: 'rename' }, 'New name (a path: folder/name.ext)'), input],
    [{ label: 'Rename', value: 'rename', primary: true }],
  );
  const name = input.value.trim();
  if (choice !== 'rename' || !name || name === file.name) return;
  try {
    await state.client!.rename(file.id, file.version, name);
  } catch (e) {
    showError(e, `Cannot rename ${file.name}`);
  }
}

async function deleteFile(file: FileInfo) {
  const choice = await ask(
    `Delete ${file.name}?`,
    [h('p', {}, 'Its history is kept: an owner can restore it.')],
    [{ label: 'Delete', value: 'delete', primary: true }],
  );
  if (choice !== 'delete') return;
  try {
    await state.client!.remove(file.id, file.version);
  } catch (e) {
    showError(e, `Cannot delete ${file.name}`);
  }
}

async function showHistory(file: FileInfo) {
  let versions;
  try {
    versions = await state.client!.history(file.id);
  } catch (e) {
    return showError(e, `Cannot read the history of ${file.name}`);
  }
  const latest = current(file.id)?.version ?? file.version;
  const table = h(
    'table',
    { class: 'history' },
    h('caption', {}, `Versions of ${file.name}`),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        ...['Version', 'Change', 'Name', 'Size', 'By', 'When', ''].map((t) =>
          h('th', { scope: 'col' }, t),
        ),
      ),
    ),
    h(
      'tbody',
      {},
      ...versions
        .slice()
        .reverse()
        .map((v) =>
          h(
            'tr',
            { 'data-version': v.version },
            h('td', {}, v.version),
            h('td', {}, v.kind.toLowerCase()),
            h('td', {}, v.name),
            h('td', {}, formatSize(v.size)),
            h('td', {}, v.author),
            h('td', {}, formatTime(v.createdAt)),
            h(
              'td',
              {},
              v.version !== latest && !v.deleted && canWrite()
                ? h(
                    'button',
                    { value: `restore:${v.version}`, 'aria-label': `Restore version ${v.version}` },
                    'Restore',
                  )
                : null,
            ),
          ),
        ),
    ),
  );
  const choice = await ask(
    `History of ${file.name}`,
    [h('div', { class: 'table-wrap' }, table)],
    [],
  );
  if (choice?.startsWith('restore:')) {
    const version = Number(choice.slice('restore:'.length));
    try {
      await state.client!.restore(file.id, version, latest);
      notice(`Restored version ${version} of ${file.name}`);
    } catch (e) {
      showError(e, `Cannot restore ${file.name}`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Members.

async function renderMembers() {
  const space = state.space!;
  let members;
  try {
    members = await state.client!.members(space.id);
  } catch (e) {
    return showError(e, 'Cannot list the members');
  }
  const roles: Role[] = ['OWNER', 'EDITOR', 'VIEWER'];
  const change = async (user: string, role: Role | null) => {
    try {
      await state.client!.setMember(space.id, user, role);
      if (user === state.session!.user) {
        await loadSpaces();
        const still = state.spaces.find((s) => s.id === space.id);
        if (!still) return renderShell();
        state.space = still;
      }
    } catch (e) {
      showError(e, 'Cannot change the member');
    }
    renderSpace();
  };
  const user = h('input', { id: 'member-user', required: true });
  const role = h(
    'select',
    { id: 'member-role' },
    ...roles.map((r) => h('option', { value: r, selected: r === 'EDITOR' }, r.toLowerCase())),
  );
  clear(
    panel,
    h(
      'table',
      { class: 'members' },
      h('caption', {}, `Members of ${space.name}`),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, 'User'),
          h('th', { scope: 'col' }, 'Role'),
          h('th', {}),
        ),
      ),
      h(
        'tbody',
        {},
        ...members.map((m) => {
          const select = h(
            'select',
            { 'aria-label': `Role of ${m.userId}`, disabled: !isOwner() },
            ...roles.map((r) => h('option', { value: r, selected: r === m.role }, r.toLowerCase())),
          );
          select.addEventListener('change', () => void change(m.userId, select.value as Role));
          return h(
            'tr',
            {},
            h('td', {}, m.userId),
            h('td', {}, select),
            h(
              'td',
              {},
              isOwner()
                ? h(
                    'button',
                    {
                      onclick: () => void change(m.userId, null),
                      'aria-label': `Remove ${m.userId}`,
                    },
                    'Remove',
                  )
                : null,
            ),
          );
        }),
      ),
    ),
    isOwner()
      ? h(
          'form',
          {
            class: 'inline',
            onsubmit: (e: Event) => {
              e.preventDefault();
              void change(user.value.trim(), role.value as Role);
            },
          },
          h('label', { for: 'member-user' }, 'Add a member'),
          user,
          h('label', { for: 'member-role', class: 'visually-hidden' }, 'Role'),
          role,
          h('button', {}, 'Add'),
        )
      : null,
  );
}

// ---------------------------------------------------------------------------------------
// The inspector (owners): the space's uploads as the metadata store holds them, beside
// the objects in storage.

const inspectorBody = h('tbody', {});
let inspecting = false;

async function refreshInspector() {
  // One request at a time: the next tick asks again.
  if (state.tab !== 'inspector' || !state.space || inspecting) return;
  const space = state.space;
  inspecting = true;
  try {
    const uploads = await state.client!.inspectUploads(space.id, 100);
    if (state.space !== space || state.tab !== 'inspector') return;
    state.inspector = uploads;
  } catch (e) {
    clearInterval(state.inspectorTimer);
    return showError(e, 'Cannot inspect the uploads');
  } finally {
    inspecting = false;
  }
  if (!panel.contains(inspectorBody)) {
    clear(
      panel,
      h(
        'p',
        { class: 'hint' },
        'Each upload as the metadata store holds it (pending, then committed or abandoned) ' +
          'beside the object storage holds under its key. Refreshed every second.',
      ),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'inspector' },
          h('caption', {}, 'Uploads, newest first'),
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ...['Name', 'Version', 'State', 'Stored object', 'By', 'Started'].map((t) =>
                h('th', { scope: 'col' }, t),
              ),
            ),
          ),
          inspectorBody,
        ),
      ),
    );
  }
  inspectorBody.replaceChildren(
    ...state.inspector.map((u) =>
      h(
        'tr',
        { 'data-upload-id': u.uploadId, 'data-state': u.state, 'data-name': u.name },
        h('td', {}, u.name),
        h('td', { class: 'num' }, u.version),
        h('td', {}, h('span', { class: `state ${u.state.toLowerCase()}` }, u.state)),
        h(
          'td',
          {},
          u.object
            ? `${formatSize(u.object.size)}${u.object.sha256 === u.sha256 ? ', checksum matches' : ''}`
            : 'none',
        ),
        h('td', {}, u.author),
        h('td', {}, formatTime(u.createdAt)),
      ),
    ),
  );
}

void start().catch((e) => renderSignIn(describeError(e).title));
