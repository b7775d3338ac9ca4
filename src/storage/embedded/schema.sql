-- Embedded backend schema, version 1. Applied once to a new database; see migrate().
CREATE TABLE spaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    seq         INTEGER NOT NULL DEFAULT 0   -- last committed change of the space
);

CREATE TABLE members (
    space_id TEXT NOT NULL REFERENCES spaces(id),
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL,
    PRIMARY KEY (space_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_id, space_id);

-- The current committed state of each file (tombstones included).
CREATE TABLE files (
    id           TEXT PRIMARY KEY,
    space_id     TEXT NOT NULL REFERENCES spaces(id),
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    blob_key     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       BLOB NOT NULL,
    content_type TEXT,
    metadata     TEXT NOT NULL,
    creator      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    seq          INTEGER NOT NULL
);
-- `changes`: files by the seq of their last change.
CREATE UNIQUE INDEX files_by_seq ON files(space_id, seq);
-- `files` listing and name uniqueness among live files.
CREATE UNIQUE INDEX files_live_name ON files(space_id, name) WHERE deleted = 0;

-- Every committed version: the space's commit log (one row per seq).
CREATE TABLE versions (
    file_id      TEXT NOT NULL,
    number       INTEGER NOT NULL,
    space_id     TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       BLOB NOT NULL,
    content_type TEXT,
    metadata     TEXT NOT NULL,
    deleted      INTEGER NOT NULL,
    author       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (file_id, number)
) WITHOUT ROWID;
CREATE UNIQUE INDEX versions_by_seq ON versions(space_id, seq);

-- Pending uploads (and what became of them).
CREATE TABLE uploads (
    id                TEXT PRIMARY KEY,
    token_hash        BLOB NOT NULL,
    space_id          TEXT NOT NULL,
    file_id           TEXT NOT NULL,
    base_version      INTEGER,
    name              TEXT NOT NULL,
    size              INTEGER NOT NULL,
    sha256            BLOB NOT NULL,
    content_type      TEXT,
    metadata          TEXT NOT NULL,
    blob_key          TEXT NOT NULL,
    author            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    state             TEXT NOT NULL,
    committed_version INTEGER
);
CREATE INDEX uploads_pending_by_expiry ON uploads(expires_at) WHERE state = 'PENDING';
