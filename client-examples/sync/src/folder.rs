//! A synced folder: made by `init`, opened (and locked) by every other command.

use std::path::{Path, PathBuf};

use crate::api::Api;
use crate::failure::Failure;
use crate::scan::rules::STATE_DIR;
use crate::state::State;

/// Where the token comes from, in order: `--token`, `FILESYNC_TOKEN`, `--token-file`,
/// then the copy `init` kept in `.filesync/token`.
#[derive(Debug, Default, Clone)]
pub struct TokenSource {
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

impl TokenSource {
    fn given(&self) -> Result<Option<String>, Failure> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file).map_err(|e| {
                Failure::Usage(format!(
                    "the token file {} cannot be read: {e}",
                    file.display()
                ))
            })?;
            return Ok(Some(token.trim().to_owned()));
        }
        Ok(None)
    }
}

/// An open synced folder. Holding it holds the folder's lock: one run at a time.
pub struct Folder {
    pub root: PathBuf,
    pub state: State,
    pub api: Api,
    pub space: String,
    pub user: String,
    /// A token given on the command line, kept once the server has accepted it.
    given_token: bool,
    exclusive: bool,
    _lock: std::fs::File,
}

impl Folder {
    /// Keeps the token this run was given (the server accepted it): the next runs use
    /// it without being told.
    pub fn keep_token(&self) -> Result<(), Failure> {
        if !(self.given_token && self.exclusive) {
            return Ok(());
        }
        write_private(&state_dir(&self.root).join("token"), self.api.token())
            .map_err(|e| Failure::Other(format!("the token cannot be kept: {e}")))
    }
}

fn state_dir(root: &Path) -> PathBuf {
    root.join(STATE_DIR)
}

/// Which space a folder is to follow.
pub enum SpaceChoice {
    Existing(String),
    /// A new space of this name (the user owns it).
    New(String),
}

/// Makes `dir` a synced folder of a space on `server`. The folder may hold files already
/// (they are uploaded, or matched with the space's, on the first sync).
pub async fn init(
    dir: &Path,
    server: &str,
    space: &SpaceChoice,
    token: &TokenSource,
) -> Result<Folder, Failure> {
    let token = token.given()?.ok_or_else(|| {
        Failure::Usage(
            "a token is needed: --token, FILESYNC_TOKEN or --token-file \
             (`filesync token --user ID` prints one on the server)"
                .into(),
        )
    })?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("{} cannot be created: {e}", dir.display())))?;
    let root = dir
        .canonicalize()
        .map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
    if state_dir(&root).join("state.db").exists() {
        return Err(Failure::Usage(format!(
            "{} is already a synced folder (delete its {STATE_DIR}/ to start over)",
            root.display()
        )));
    }
    // One synced folder inside another would sync the inner one's state (its token
    // included) into the outer space.
    if let Some(outer) = root
        .ancestors()
        .skip(1)
        .find(|dir| state_dir(dir).join("state.db").exists())
    {
        return Err(Failure::Usage(format!(
            "{} is inside the synced folder {}; choose a place outside it",
            root.display(),
            outer.display()
        )));
    }
    if let Some(inner) = find_state_dir(&root) {
        return Err(Failure::Usage(format!(
            "{} holds another synced folder ({}); choose a place that does not",
            root.display(),
            inner.display()
        )));
    }
    let api = Api::new(server, &token);
    let user = api.me().await?;
    let space = match space {
        SpaceChoice::Existing(id) => id.clone(),
        SpaceChoice::New(name) => api.create_space(name).await?,
    };
    let space = space.as_str();
    let info = api.space(space).await?.ok_or_else(|| {
        Failure::NoAccess(format!("there is no space {space} that {user} belongs to"))
    })?;
    std::fs::create_dir_all(state_dir(&root))
        .map_err(|e| Failure::Other(format!("{STATE_DIR}/ cannot be created: {e}")))?;
    let lock = lock(&root)?;
    let state = State::open(&state_dir(&root).join("state.db"))?;
    state.set("server", api.base())?;
    state.set("space", &info.id)?;
    state.set("space_name", &info.name)?;
    state.set("user", &user)?;
    write_private(&state_dir(&root).join("token"), &token)
        .map_err(|e| Failure::Other(format!("the token cannot be kept: {e}")))?;
    Ok(Folder {
        root,
        state,
        api,
        space: info.id,
        user,
        given_token: false,
        exclusive: true,
        _lock: lock,
    })
}

/// Opens the synced folder `dir` to sync it: one run at a time.
pub fn open(dir: &Path, token: &TokenSource) -> Result<Folder, Failure> {
    open_with(dir, token, true)
}

/// Opens the synced folder `dir` to look at it (`status`, `conflicts`): works beside a
/// running `watch`.
pub fn open_shared(dir: &Path, token: &TokenSource) -> Result<Folder, Failure> {
    open_with(dir, token, false)
}

fn open_with(dir: &Path, token: &TokenSource, exclusive: bool) -> Result<Folder, Failure> {
    let root = dir
        .canonicalize()
        .map_err(|e| Failure::Usage(format!("{} cannot be opened: {e}", dir.display())))?;
    let db = state_dir(&root).join("state.db");
    if !db.exists() {
        return Err(Failure::Usage(format!(
            "{} is not a synced folder (no {STATE_DIR}/ in it). Run `filesync-sync init {} \
             --server URL --space ID` first; if it was synced before, check the drive is \
             mounted",
            root.display(),
            dir.display()
        )));
    }
    let lock = if exclusive {
        lock(&root)?
    } else {
        std::fs::File::open(state_dir(&root))
            .map_err(|e| Failure::Other(format!("{STATE_DIR}/: {e}")))?
    };
    let state = State::open(&db)?;
    let get = |key: &str| -> Result<String, Failure> {
        state
            .get(key)?
            .ok_or_else(|| Failure::Other(format!("the state has no {key}: run init again")))
    };
    let (server, space, user) = (get("server")?, get("space")?, get("user")?);
    let given = token.given()?;
    let given_token = given.is_some();
    let token = match given {
        Some(token) => token,
        // None given nor kept: the server will say so when asked (commands that work
        // offline need none).
        None => std::fs::read_to_string(state_dir(&root).join("token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default(),
    };
    Ok(Folder {
        api: Api::new(&server, &token),
        root,
        state,
        space,
        user,
        given_token,
        exclusive,
        _lock: lock,
    })
}

/// A synced folder's state anywhere under `root` (links not followed).
fn find_state_dir(root: &Path) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if entry.file_name() == STATE_DIR && dir != root {
                    return Some(dir);
                }
                stack.push(entry.path());
            }
        }
    }
    None
}

/// Takes the folder's lock (released when the process ends, however it ends).
fn lock(root: &Path) -> Result<std::fs::File, Failure> {
    let path = state_dir(root).join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; flock has no other preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Failure::Locked(format!(
                "another filesync-sync is running on {}; stop it first",
                root.display()
            )));
        }
    }
    Ok(file)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
