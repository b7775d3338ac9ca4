//! `MetadataStore` on SQLite. Reads run on the reader pool; writes go through the
//! group-commit writer, each as one savepoint of a durable transaction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::db::Db;
use super::rows::{
    self, CHANGE_COLUMNS, FILE_COLUMNS, SPACE_COLUMNS, UPLOAD_COLUMNS, VERSION_COLUMNS, internal,
};
use crate::domain::{
    Change, FileId, FileRecord, Millis, NameKey, NewCopy, PendingUpload, Role, SpaceId, SpaceName,
    SpaceSettings, UploadId, UploadState, UserId, VersionRecord,
};
use crate::storage::{Member, MetadataStore, Notice, Publish, Space, StoreError};

#[async_trait]
impl MetadataStore for Db {
    async fn create_space(
        &self,
        id: SpaceId,
        name: SpaceName,
        owner: UserId,
        at: Millis,
    ) -> Result<Space, StoreError> {
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(
                    "INSERT INTO spaces (id, name, created_by, created_at, seq)
                     VALUES (?1, ?2, ?3, ?4, 0)",
                )
                .and_then(|mut s| {
                    s.execute(params![id.to_string(), name.as_str(), owner.as_str(), at])
                })
                .map_err(internal)?;
                conn.prepare_cached(
                    "INSERT INTO members (space_id, user_id, role) VALUES (?1, ?2, 'OWNER')",
                )
                .and_then(|mut s| s.execute(params![id.to_string(), owner.as_str()]))
                .map_err(internal)?;
                Ok(Space {
                    id,
                    name,
                    created_by: owner,
                    created_at: at,
                    seq: 0,
                })
            })
            .await
    }

    async fn space(&self, id: SpaceId) -> Result<Option<Space>, StoreError> {
        self.lookup(move |conn| {
            conn.prepare_cached(&format!("SELECT {SPACE_COLUMNS} FROM spaces WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id.to_string()], rows::space).optional())
                .map_err(internal)
        })
    }

    async fn space_settings(&self, space: SpaceId) -> Result<Option<SpaceSettings>, StoreError> {
        let json: Option<String> = self.lookup(move |conn| {
            conn.prepare_cached("SELECT settings FROM spaces WHERE id = ?1")
                .and_then(|mut s| s.query_row([space.to_string()], |r| r.get(0)).optional())
                .map_err(internal)
        })?;
        json.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Other(e.into())))
            .transpose()
    }

    async fn set_space_settings(
        &self,
        space: SpaceId,
        settings: SpaceSettings,
        before_first_change: bool,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&settings).map_err(|e| StoreError::Other(e.into()))?;
        self.writer
            .write(move |conn, _| {
                let seq: Option<i64> = conn
                    .prepare_cached("SELECT seq FROM spaces WHERE id = ?1")
                    .and_then(|mut s| s.query_row([space.to_string()], |r| r.get(0)).optional())
                    .map_err(internal)?;
                match seq {
                    None => return Err(StoreError::NoSuchSpace),
                    Some(seq) if before_first_change && seq > 0 => return Ok(false),
                    Some(_) => {}
                }
                conn.prepare_cached("UPDATE spaces SET settings = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![space.to_string(), json]))
                    .map_err(internal)?;
                Ok(true)
            })
            .await
    }

    async fn spaces_of(
        &self,
        user: &UserId,
        after: Option<SpaceId>,
        limit: usize,
    ) -> Result<Vec<(Space, Role)>, StoreError> {
        let user = user.clone();
        let after = after.map(|a| a.to_string());
        self.read(move |conn| {
            let sql = format!(
                "SELECT {cols}, m.role FROM members m JOIN spaces s ON s.id = m.space_id
                 WHERE m.user_id = ?1
                   AND (?2 IS NULL OR (s.created_at, s.id) >
                        (SELECT created_at, id FROM spaces WHERE id = ?2))
                 ORDER BY s.created_at, s.id LIMIT ?3",
                cols = prefixed("s", SPACE_COLUMNS)
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
            let rows = stmt
                .query_map(params![user.as_str(), after, limit as i64], |row| {
                    let role: String = row.get(5)?;
                    Ok((rows::space(row)?, role))
                })
                .map_err(internal)?;
            rows.map(|r| {
                let (space, role) = r.map_err(internal)?;
                Ok((space, parse_role(&role)?))
            })
            .collect()
        })
        .await
    }

    async fn role(&self, space: SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
        let user = user.clone();
        self.lookup(move |conn| role_in(conn, space, &user))
    }

    async fn membership(
        &self,
        space: SpaceId,
        user: &UserId,
    ) -> Result<(Option<Role>, Option<u64>), StoreError> {
        let user = user.clone();
        self.lookup(move |conn| {
            // One statement: one snapshot of the epoch and the role.
            let found: Option<(i64, Option<String>)> = conn
                .prepare_cached(
                    "SELECT members_epoch, (SELECT role FROM members m
                         WHERE m.space_id = spaces.id AND m.user_id = ?2)
                     FROM spaces WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row(params![space.to_string(), user.as_str()], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .map_err(internal)?;
            let Some((epoch, role)) = found else {
                return Ok((None, None));
            };
            let role = role.as_deref().map(parse_role).transpose()?;
            Ok((role, Some(u64::try_from(epoch).unwrap_or(0))))
        })
    }

    async fn members(
        &self,
        space: SpaceId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        let after = after.map(|u| u.as_str().to_owned()).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user_id, role FROM members WHERE space_id = ?1 AND user_id > ?2
                     ORDER BY user_id LIMIT ?3",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map(params![space.to_string(), after, limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(internal)?;
            rows.map(|r| {
                let (user, role) = r.map_err(internal)?;
                Ok(Member {
                    user: UserId::parse(&user).map_err(|e| anyhow::anyhow!(e))?,
                    role: parse_role(&role)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn set_member(
        &self,
        space: SpaceId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        self.writer
            .write(move |conn, notices| {
                let exists: bool = conn
                    .prepare_cached("SELECT 1 FROM spaces WHERE id = ?1")
                    .and_then(|mut s| s.exists([space.to_string()]))
                    .map_err(internal)?;
                if !exists {
                    return Err(StoreError::NoSuchSpace);
                }
                let current = role_in(conn, space, &user)?;
                if current == role {
                    return Ok(());
                }
                if current == Some(Role::Owner) && role != Some(Role::Owner) {
                    let owners: i64 = conn
                        .prepare_cached(
                            "SELECT count(*) FROM members WHERE space_id = ?1 AND role = 'OWNER'",
                        )
                        .and_then(|mut s| s.query_row([space.to_string()], |r| r.get(0)))
                        .map_err(internal)?;
                    if owners <= 1 {
                        return Err(StoreError::LastOwner);
                    }
                }
                match role {
                    Some(role) => conn
                        .prepare_cached(
                            "INSERT INTO members (space_id, user_id, role) VALUES (?1, ?2, ?3)
                             ON CONFLICT (space_id, user_id) DO UPDATE SET role = excluded.role",
                        )
                        .and_then(|mut s| {
                            s.execute(params![space.to_string(), user.as_str(), role.as_str()])
                        }),
                    None => conn
                        .prepare_cached("DELETE FROM members WHERE space_id = ?1 AND user_id = ?2")
                        .and_then(|mut s| s.execute(params![space.to_string(), user.as_str()])),
                }
                .map_err(internal)?;
                conn.prepare_cached(
                    "UPDATE spaces SET members_epoch = members_epoch + 1 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute([space.to_string()]))
                .map_err(internal)?;
                notices.push(Notice::MembershipChanged {
                    space_id: space,
                    user,
                });
                Ok(())
            })
            .await
    }

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>, StoreError> {
        self.lookup(move |conn| file_by_id(conn, id))
    }

    async fn file_for(
        &self,
        id: FileId,
        user: &UserId,
    ) -> Result<Option<(FileRecord, Option<Role>)>, StoreError> {
        let user = user.clone();
        self.lookup(move |conn| {
            let sql = format!(
                "SELECT {FILE_COLUMNS}, (SELECT role FROM members m
                     WHERE m.space_id = files.space_id AND m.user_id = ?2)
                 FROM files WHERE id = ?1"
            );
            let found = conn
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row(params![id.to_string(), user.as_str()], |row| {
                        Ok((rows::file(row)?, row.get::<_, Option<String>>(14)?))
                    })
                    .optional()
                })
                .map_err(internal)?;
            found
                .map(|(file, role)| Ok((file, role.as_deref().map(parse_role).transpose()?)))
                .transpose()
        })
    }

    async fn version(&self, id: FileId, number: u32) -> Result<Option<VersionRecord>, StoreError> {
        self.lookup(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE file_id = ?1 AND number = ?2"
            ))
            .and_then(|mut s| {
                s.query_row(params![id.to_string(), number], rows::version)
                    .optional()
            })
            .map_err(internal)
        })
    }

    async fn versions(
        &self,
        id: FileId,
        after: u32,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLUMNS} FROM versions
                     WHERE file_id = ?1 AND number > ?2 ORDER BY number LIMIT ?3"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(params![id.to_string(), after, limit as i64], rows::version)
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn list_files(
        &self,
        space: SpaceId,
        key_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        // Keys compare bytewise (BINARY collation on UTF-8), so a prefix is the range
        // [prefix, next string after every string starting with prefix).
        let lower = match after {
            Some(after) if after >= key_prefix => after.to_owned(),
            _ => key_prefix.to_owned(),
        };
        let lower_inclusive = after.is_none_or(|a| a < key_prefix);
        let upper = crate::storage::prefix_upper_bound(key_prefix);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM files
                 WHERE space_id = ?1 AND deleted = 0
                   AND (name_key > ?2 OR (?3 AND name_key = ?2))
                   AND (?4 IS NULL OR name_key < ?4)
                 ORDER BY name_key LIMIT ?5"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![
                        space.to_string(),
                        lower,
                        lower_inclusive,
                        upper,
                        limit as i64
                    ],
                    rows::file,
                )
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn file_keyed(
        &self,
        space: SpaceId,
        key: &NameKey,
    ) -> Result<Option<FileRecord>, StoreError> {
        let key = key.as_str().to_owned();
        self.lookup(move |conn| live_file_keyed(conn, space, &key, None))
    }

    async fn changes(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files
                     WHERE space_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![space.to_string(), after_seq as i64, limit as i64],
                    rows::file,
                )
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn commit_log(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CHANGE_COLUMNS} FROM versions v JOIN files f ON f.id = v.file_id
                     WHERE v.space_id = ?1 AND v.seq > ?2 ORDER BY v.seq LIMIT ?3"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![space.to_string(), after_seq as i64, limit as i64],
                    rows::change,
                )
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn create_upload(&self, upload: PendingUpload) -> Result<(), StoreError> {
        self.writer
            .write(move |conn, _| {
                let u = &upload;
                conn.prepare_cached(&format!(
                    "INSERT INTO uploads ({UPLOAD_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                             ?17, ?18, ?19, ?20)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        u.id.to_string(),
                        u.token_hash,
                        u.space_id.to_string(),
                        u.file_id.to_string(),
                        u.base_version,
                        u.name.as_str(),
                        u.size as i64,
                        u.sha256.0,
                        u.content_type,
                        u.metadata.to_json(),
                        u.blob_key,
                        u.author.as_str(),
                        u.created_at,
                        u.expires_at,
                        u.state.as_str(),
                        u.committed_version,
                        u.method.as_str(),
                        u.multipart.as_ref().map(|m| m.part_size as i64),
                        u.multipart.as_ref().map(|m| m.part_count),
                        u.multipart.as_ref().map(|m| m.store_id.as_str()),
                    ])
                })
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn upload(&self, id: UploadId) -> Result<Option<PendingUpload>, StoreError> {
        self.lookup(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"
            ))
            .and_then(|mut s| s.query_row([id.to_string()], rows::upload).optional())
            .map_err(internal)
        })
    }

    async fn pending_uploads_of(&self, user: &UserId, now: Millis) -> Result<usize, StoreError> {
        let user = user.clone();
        self.lookup(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FROM uploads \
                 WHERE author = ?1 AND state = 'PENDING' AND expires_at > ?2",
            )
            .and_then(|mut s| s.query_row(params![user.as_str(), now], |r| r.get::<_, i64>(0)))
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(internal)
        })
    }

    async fn uploads_of_space(
        &self,
        space: SpaceId,
        after: Option<UploadId>,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        self.read(move |conn| {
            // Newest first; `after` is found in the same snapshot (none: from the top).
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE space_id = ?1 AND (
                       ?2 IS NULL OR (created_at, id) < (
                         SELECT created_at, id FROM uploads WHERE id = ?2 AND space_id = ?1))
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![
                        space.to_string(),
                        after.map(|a| a.to_string()),
                        limit as i64
                    ],
                    rows::upload,
                )
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn abandon_upload(&self, id: UploadId, purge_at: Millis) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn, _| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE uploads SET state = 'ABANDONED', purge_at = ?2
                         WHERE id = ?1 AND state = 'PENDING'",
                    )
                    .and_then(|mut s| s.execute(params![id.to_string(), purge_at]))
                    .map_err(internal)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn uploads_to_sweep(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        self.read(move |conn| {
            // Each half uses its own partial index.
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM (
                       SELECT * FROM uploads WHERE state = 'PENDING' AND expires_at < ?1
                       UNION ALL
                       SELECT * FROM uploads WHERE purge_at IS NOT NULL AND purge_at < ?1
                     ) ORDER BY expires_at LIMIT ?2"
                ))
                .map_err(internal)?;
            let rows = stmt
                .query_map(params![now, limit as i64], rows::upload)
                .map_err(internal)?;
            rows.collect::<Result<_, _>>().map_err(internal)
        })
        .await
    }

    async fn upload_purged(&self, id: UploadId) -> Result<(), StoreError> {
        self.writer
            .write(move |conn, _| {
                conn.prepare_cached(
                    "UPDATE uploads SET purge_at = NULL WHERE id = ?1 AND state = 'ABANDONED'",
                )
                .and_then(|mut s| s.execute([id.to_string()]))
                .map_err(internal)?;
                Ok(())
            })
            .await
    }

    async fn publish(&self, change: Publish) -> Result<FileRecord, StoreError> {
        self.writer
            .write(move |conn, notices| publish(conn, change, notices))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lookup(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(internal))
    }
}

/// The atomic publish: check the upload and the base version, take the space's next seq,
/// append the version, replace the file's current state, mark the upload committed.
fn publish(
    conn: &Connection,
    change: Publish,
    notices: &mut Vec<Notice>,
) -> Result<FileRecord, StoreError> {
    if let Some(upload) = change.upload {
        let state: Option<String> = conn
            .prepare_cached("SELECT state FROM uploads WHERE id = ?1")
            .and_then(|mut s| s.query_row([upload.to_string()], |r| r.get(0)).optional())
            .map_err(internal)?;
        if state.as_deref() != Some(UploadState::Pending.as_str()) {
            return Err(StoreError::UploadNotPending);
        }
    }

    let current = file_by_id(conn, change.file_id)?;
    let (number, creator, created_at) = match (&current, change.base_version) {
        (None, None) => (1, change.actor.clone(), change.at),
        (Some(file), Some(base)) if file.version == base && file.space_id == change.space_id => {
            (base + 1, file.creator.clone(), file.created_at)
        }
        (Some(file), _) => {
            return Err(StoreError::Conflict {
                current: file.version,
            });
        }
        (None, Some(_)) => return Err(StoreError::Conflict { current: 0 }),
    };

    // The name: no other live file has its key, none is one of its folders, and it is
    // no folder of another's. (The writer is the only one: these reads cannot go stale
    // before the write below.) A live file keeping its key is not checked again: it may
    // predate the rules (a data dir from before keys; the migration warns of those).
    let stored_key: Option<String> = conn
        .prepare_cached("SELECT name_key FROM files WHERE id = ?1 AND deleted = 0")
        .and_then(|mut s| {
            s.query_row([change.file_id.to_string()], |r| r.get(0))
                .optional()
        })
        .map_err(internal)?;
    let keeps_its_key = stored_key.as_deref() == Some(change.name_key.as_str());
    if !change.deleted && !keeps_its_key {
        let space = change.space_id;
        let key = change.name_key.as_str();
        let other = Some(change.file_id);
        if let Some(taken) = live_file_keyed(conn, space, key, other)? {
            return Err(StoreError::NameTaken {
                file_id: taken.id,
                current: taken.version,
            });
        }
        for folder in change.name_key.folders() {
            if let Some(file) = live_file_keyed(conn, space, folder, other)? {
                return Err(StoreError::PathClash {
                    file_id: file.id,
                    current: file.version,
                });
            }
        }
        let inside: Option<FileRecord> = conn
            .prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files
                 WHERE space_id = ?1 AND deleted = 0 AND id != ?4
                   AND name_key > ?2 AND name_key < ?3 LIMIT 1"
            ))
            .and_then(|mut s| {
                s.query_row(
                    params![
                        space.to_string(),
                        format!("{key}/"),
                        format!("{key}0"),
                        change.file_id.to_string()
                    ],
                    rows::file,
                )
                .optional()
            })
            .map_err(internal)?;
        if let Some(file) = inside {
            return Err(StoreError::PathClash {
                file_id: file.id,
                current: file.version,
            });
        }
    }

    let (seq, members_epoch): (i64, i64) = conn
        .prepare_cached(
            "UPDATE spaces SET seq = seq + 1 WHERE id = ?1 RETURNING seq, members_epoch",
        )
        .and_then(|mut s| {
            s.query_row([change.space_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(internal)?
        .ok_or(StoreError::NoSuchSpace)?;

    let c = &change;
    conn.prepare_cached(&format!(
        "INSERT INTO versions ({VERSION_COLUMNS}, members_epoch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            c.file_id.to_string(),
            c.space_id.to_string(),
            number,
            seq,
            c.kind.as_str(),
            c.name.as_str(),
            c.content.blob_key,
            c.content.size as i64,
            c.content.sha256.0,
            c.content.content_type,
            c.metadata.to_json(),
            c.deleted,
            c.actor.as_str(),
            c.at,
            members_epoch,
        ])
    })
    .map_err(internal)?;

    conn.prepare_cached(&format!(
        "INSERT INTO files ({FILE_COLUMNS}, name_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO UPDATE SET
           name = excluded.name, version = excluded.version, blob_key = excluded.blob_key,
           size = excluded.size, sha256 = excluded.sha256, content_type = excluded.content_type,
           metadata = excluded.metadata, updated_at = excluded.updated_at,
           deleted = excluded.deleted, seq = excluded.seq, name_key = excluded.name_key"
    ))
    .and_then(|mut s| {
        s.execute(params![
            c.file_id.to_string(),
            c.space_id.to_string(),
            c.name.as_str(),
            number,
            c.content.blob_key,
            c.content.size as i64,
            c.content.sha256.0,
            c.content.content_type,
            c.metadata.to_json(),
            creator.as_str(),
            created_at,
            c.at,
            c.deleted,
            seq,
            c.name_key.as_str(),
        ])
    })
    .map_err(internal)?;

    if let Some(upload) = change.upload {
        conn.prepare_cached(
            "UPDATE uploads SET state = 'COMMITTED', committed_version = ?2 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![upload.to_string(), number]))
        .map_err(internal)?;
    }
    // The new content's copies, queued with the version that holds it.
    let copies: Vec<NewCopy> = change
        .copy_to
        .iter()
        .map(|store| NewCopy::of(store.clone(), &change.content, change.at))
        .collect();
    super::copies::insert_copies(conn, change.space_id, &copies, change.at)?;

    let seq = seq as u64;
    notices.push(Notice::Committed {
        space_id: change.space_id,
        seq,
    });
    Ok(FileRecord {
        id: change.file_id,
        space_id: change.space_id,
        name: change.name,
        version: number,
        content: change.content,
        metadata: change.metadata,
        creator,
        created_at,
        updated_at: change.at,
        deleted: change.deleted,
        seq,
    })
}

/// The live file of `space` whose name has `key`, other than `except`.
fn live_file_keyed(
    conn: &Connection,
    space: SpaceId,
    key: &str,
    except: Option<FileId>,
) -> Result<Option<FileRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM files
         WHERE space_id = ?1 AND name_key = ?2 AND deleted = 0 AND id != ?3 LIMIT 1"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![
                space.to_string(),
                key,
                except.map(|id| id.to_string()).unwrap_or_default()
            ],
            rows::file,
        )
        .optional()
    })
    .map_err(internal)
}

fn file_by_id(conn: &Connection, id: FileId) -> Result<Option<FileRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id.to_string()], rows::file).optional())
        .map_err(internal)
}

fn role_in(conn: &Connection, space: SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
    let role: Option<String> = conn
        .prepare_cached("SELECT role FROM members WHERE space_id = ?1 AND user_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![space.to_string(), user.as_str()], |r| r.get(0))
                .optional()
        })
        .map_err(internal)?;
    role.as_deref().map(parse_role).transpose()
}

fn parse_role(s: &str) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Other(anyhow::anyhow!("stored role: {e}")))
}

fn prefixed(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
