//! The DynamoDB items of the single metadata table: their keys and how records map onto
//! attributes. ARCHITECTURE.md ("The AWS backend") lists every item and access pattern.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::{
    Change, Content, FileId, FileName, FileRecord, Invalid, Metadata, Millis, Multipart,
    PendingUpload, Role, Sha256, SpaceId, SpaceName, UploadId, UploadMethod, UploadState, UserId,
    VersionRecord,
};
use crate::storage::{Space, StoreError};

pub type Attrs = HashMap<String, AttributeValue>;

/// The global secondary index listing a user's spaces, by space creation.
pub const USER_SPACES_INDEX: &str = "user-spaces";
/// The sparse global secondary index of pending uploads, by expiry.
pub const PENDING_INDEX: &str = "pending-uploads";
/// Partitions of [`PENDING_INDEX`], so that the sweep's writes and reads spread out.
pub const PENDING_SHARDS: u32 = 8;
/// The global secondary index of a space's uploads in every state, by creation.
pub const SPACE_UPLOADS_INDEX: &str = "space-uploads";
/// How long a finished upload item is kept past its expiry before DynamoDB's TTL drops it.
pub const UPLOAD_RETENTION_SECS: i64 = 7 * 24 * 3600;

pub fn space_pk(space: SpaceId) -> String {
    format!("S#{space}")
}
pub const SPACE_SK: &str = "SPACE";
pub fn member_sk(user: &UserId) -> String {
    format!("M#{}", user.as_str())
}
/// A live file under its name key.
pub fn name_sk(key: &str) -> String {
    format!("N#{key}")
}
/// The count of live files under a folder (its name key).
pub fn folder_sk(key: &str) -> String {
    format!("D#{key}")
}
/// Sort keys of seq-ordered items: fixed width, so string order is numeric order.
pub fn log_sk(seq: u64) -> String {
    format!("L#{seq:020}")
}
pub fn latest_sk(seq: u64) -> String {
    format!("X#{seq:020}")
}
pub fn file_pk(file: FileId) -> String {
    format!("F#{file}")
}
pub const FILE_SK: &str = "FILE";
pub fn version_sk(number: u32) -> String {
    format!("V#{number:010}")
}
pub fn upload_pk(upload: UploadId) -> String {
    format!("U#{upload}")
}
pub const UPLOAD_SK: &str = "UPLOAD";

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The primary key of an item.
pub fn key(pk: String, sk: impl Into<String>) -> Attrs {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// Typed reads of an item's attributes; a missing or mistyped one is a corrupt item.
pub struct Item<'a>(pub &'a Attrs);

impl<'a> Item<'a> {
    fn get(&self, name: &str) -> Result<&'a AttributeValue, StoreError> {
        self.0
            .get(name)
            .ok_or_else(|| corrupt(format!("attribute {name} is missing")))
    }

    pub fn str(&self, name: &str) -> Result<&'a str, StoreError> {
        match self.get(name)? {
            AttributeValue::S(v) => Ok(v),
            _ => Err(corrupt(format!("attribute {name} is not a string"))),
        }
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(_) => Err(corrupt(format!("attribute {name} is not a string"))),
        }
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError> {
        match self.get(name)? {
            AttributeValue::N(v) => v
                .parse()
                .map_err(|_| corrupt(format!("attribute {name} is out of range"))),
            _ => Err(corrupt(format!("attribute {name} is not a number"))),
        }
    }

    pub fn opt_num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => self.num(name).map(Some),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, StoreError> {
        match self.get(name)? {
            AttributeValue::Bool(v) => Ok(*v),
            _ => Err(corrupt(format!("attribute {name} is not a boolean"))),
        }
    }

    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<T, StoreError>
    where
        T::Err: std::fmt::Display,
    {
        self.str(name)?
            .parse()
            .map_err(|e| corrupt(format!("attribute {name}: {e}")))
    }

    fn user(&self, name: &str) -> Result<UserId, StoreError> {
        UserId::parse(self.str(name)?).map_err(|e| corrupt(format!("attribute {name}: {e}")))
    }

    fn sha256(&self, name: &str) -> Result<Sha256, StoreError> {
        Sha256::parse(self.str(name)?).map_err(|e| corrupt(format!("attribute {name}: {e}")))
    }

    fn metadata(&self) -> Result<Metadata, StoreError> {
        Metadata::from_json(self.str("metadata")?)
            .map_err(|e| corrupt(format!("attribute metadata: {e}")))
    }

    pub fn content(&self) -> Result<Content, StoreError> {
        Ok(Content {
            blob_key: self.str("blob_key")?.to_owned(),
            size: self.num("size")?,
            sha256: self.sha256("sha256")?,
            content_type: self.opt_str("content_type")?.map(str::to_owned),
        })
    }
}

fn corrupt(message: String) -> StoreError {
    StoreError::Other(anyhow::anyhow!("corrupt metadata item: {message}"))
}

pub fn put_content(attrs: &mut Attrs, content: &Content) {
    attrs.insert("blob_key".into(), s(&content.blob_key));
    attrs.insert("size".into(), n(content.size));
    attrs.insert("sha256".into(), s(content.sha256.to_hex()));
    if let Some(ct) = &content.content_type {
        attrs.insert("content_type".into(), s(ct));
    }
}

pub fn space_item(space: &Space, owners: u32) -> Attrs {
    let mut attrs = key(space_pk(space.id), SPACE_SK);
    attrs.insert("name".into(), s(space.name.as_str()));
    attrs.insert("created_by".into(), s(space.created_by.as_str()));
    attrs.insert("created_at".into(), n(space.created_at));
    attrs.insert("seq".into(), n(space.seq));
    attrs.insert("owners".into(), n(owners));
    attrs.insert("members_epoch".into(), n(0));
    attrs
}

/// The membership epoch of a space item (spaces made before it existed are at 0).
pub fn members_epoch_of(attrs: &Attrs) -> Result<u64, StoreError> {
    Ok(Item(attrs).opt_num("members_epoch")?.unwrap_or(0))
}

pub fn space_from(attrs: &Attrs) -> Result<Space, StoreError> {
    let item = Item(attrs);
    let id: SpaceId = item
        .str("pk")?
        .strip_prefix("S#")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| corrupt("space key".into()))?;
    Ok(Space {
        id,
        name: SpaceName::from_stored(item.str("name")?.to_owned()),
        created_by: item.user("created_by")?,
        created_at: item.num("created_at")?,
        seq: item.num("seq")?,
    })
}

/// A member item; it also carries the keys of [`USER_SPACES_INDEX`].
pub fn member_item(space: SpaceId, space_created_at: Millis, user: &UserId, role: Role) -> Attrs {
    let mut attrs = key(space_pk(space), member_sk(user));
    attrs.insert("role".into(), s(role.as_str()));
    attrs.insert("space_id".into(), s(space.to_string()));
    attrs.insert("member_user".into(), s(user.as_str()));
    attrs.insert(
        "space_order".into(),
        s(space_order(space, space_created_at)),
    );
    attrs
}

/// A membership's place in its user's list of spaces: the space's creation, then its id.
pub fn space_order(space: SpaceId, space_created_at: Millis) -> String {
    format!("{:020}#{space}", space_created_at.max(0))
}

pub fn role_from(attrs: &Attrs) -> Result<Role, StoreError> {
    Item(attrs).parse("role")
}

pub fn member_user_from(attrs: &Attrs) -> Result<UserId, StoreError> {
    Item(attrs).user("member_user")
}

/// The current state of a file, as stored under its id (`F#id / FILE`), under its seq
/// (`S#space / X#seq`, the `changes` index) and, while live, under its name
/// (`S#space / N#name`, listings and name uniqueness).
pub fn file_item(pk: String, sk: String, file: &FileRecord) -> Attrs {
    let mut attrs = key(pk, sk);
    attrs.insert("file_id".into(), s(file.id.to_string()));
    attrs.insert("space_id".into(), s(file.space_id.to_string()));
    attrs.insert("name".into(), s(file.name.as_str()));
    attrs.insert("version".into(), n(file.version));
    put_content(&mut attrs, &file.content);
    attrs.insert("metadata".into(), s(file.metadata.to_json()));
    attrs.insert("creator".into(), s(file.creator.as_str()));
    attrs.insert("created_at".into(), n(file.created_at));
    attrs.insert("updated_at".into(), n(file.updated_at));
    attrs.insert("deleted".into(), AttributeValue::Bool(file.deleted));
    attrs.insert("seq".into(), n(file.seq));
    attrs
}

pub fn file_from(attrs: &Attrs) -> Result<FileRecord, StoreError> {
    let item = Item(attrs);
    Ok(FileRecord {
        id: item.parse("file_id")?,
        space_id: item.parse("space_id")?,
        name: FileName::from_stored(item.str("name")?.to_owned()),
        version: item.num("version")?,
        content: item.content()?,
        metadata: item.metadata()?,
        creator: item.user("creator")?,
        created_at: item.num("created_at")?,
        updated_at: item.num("updated_at")?,
        deleted: item.bool("deleted")?,
        seq: item.num("seq")?,
    })
}

/// A version under its file (`F#id / V#number`), for history.
pub fn version_item(v: &VersionRecord) -> Attrs {
    let mut attrs = key(file_pk(v.file_id), version_sk(v.number));
    put_version(&mut attrs, v);
    attrs
}

fn put_version(attrs: &mut Attrs, v: &VersionRecord) {
    attrs.insert("file_id".into(), s(v.file_id.to_string()));
    attrs.insert("space_id".into(), s(v.space_id.to_string()));
    attrs.insert("number".into(), n(v.number));
    attrs.insert("seq".into(), n(v.seq));
    attrs.insert("kind".into(), s(v.kind.as_str()));
    attrs.insert("name".into(), s(v.name.as_str()));
    put_content(attrs, &v.content);
    attrs.insert("metadata".into(), s(v.metadata.to_json()));
    attrs.insert("deleted".into(), AttributeValue::Bool(v.deleted));
    attrs.insert("author".into(), s(v.author.as_str()));
    attrs.insert("at".into(), n(v.at));
}

pub fn version_from(attrs: &Attrs) -> Result<VersionRecord, StoreError> {
    let item = Item(attrs);
    Ok(VersionRecord {
        file_id: item.parse("file_id")?,
        space_id: item.parse("space_id")?,
        number: item.num("number")?,
        seq: item.num("seq")?,
        kind: item.parse("kind")?,
        name: FileName::from_stored(item.str("name")?.to_owned()),
        content: item.content()?,
        metadata: item.metadata()?,
        deleted: item.bool("deleted")?,
        author: item.user("author")?,
        at: item.num("at")?,
    })
}

/// An entry of the space's commit log (`S#space / L#seq`): the version plus what the
/// file keeps across versions, so that one item is one [`Change`].
pub fn log_item(
    v: &VersionRecord,
    creator: &UserId,
    created_at: Millis,
    members_epoch: u64,
) -> Attrs {
    let mut attrs = key(space_pk(v.space_id), log_sk(v.seq));
    put_version(&mut attrs, v);
    attrs.insert("creator".into(), s(creator.as_str()));
    attrs.insert("created_at".into(), n(created_at));
    attrs.insert("members_epoch".into(), n(members_epoch));
    attrs
}

pub fn change_from(attrs: &Attrs) -> Result<Change, StoreError> {
    let item = Item(attrs);
    let v = version_from(attrs)?;
    Ok(Change {
        kind: v.kind,
        actor: v.author.clone(),
        file: FileRecord {
            id: v.file_id,
            space_id: v.space_id,
            name: v.name,
            version: v.number,
            content: v.content,
            metadata: v.metadata,
            creator: item.user("creator")?,
            created_at: item.num("created_at")?,
            updated_at: v.at,
            deleted: v.deleted,
            seq: v.seq,
        },
        members_epoch: item.opt_num("members_epoch")?.unwrap_or(0),
    })
}

/// A pending upload (`U#id / UPLOAD`). While pending it carries the keys of
/// [`PENDING_INDEX`]; `ttl` lets DynamoDB drop the item a week after it expired.
pub fn upload_item(u: &PendingUpload) -> Attrs {
    let mut attrs = key(upload_pk(u.id), UPLOAD_SK);
    attrs.insert("token_hash".into(), s(hex::encode(u.token_hash)));
    attrs.insert("space_id".into(), s(u.space_id.to_string()));
    attrs.insert("file_id".into(), s(u.file_id.to_string()));
    if let Some(base) = u.base_version {
        attrs.insert("base_version".into(), n(base));
    }
    attrs.insert("name".into(), s(u.name.as_str()));
    attrs.insert("size".into(), n(u.size));
    attrs.insert("sha256".into(), s(u.sha256.to_hex()));
    if let Some(ct) = &u.content_type {
        attrs.insert("content_type".into(), s(ct));
    }
    attrs.insert("metadata".into(), s(u.metadata.to_json()));
    attrs.insert("blob_key".into(), s(&u.blob_key));
    attrs.insert("author".into(), s(u.author.as_str()));
    attrs.insert("created_at".into(), n(u.created_at));
    attrs.insert("expires_at".into(), n(u.expires_at));
    attrs.insert("state".into(), s(u.state.as_str()));
    attrs.insert("upload_space".into(), s(u.space_id.to_string()));
    attrs.insert("upload_order".into(), s(upload_order(u)));
    if let Some(v) = u.committed_version {
        attrs.insert("committed_version".into(), n(v));
    }
    attrs.insert("method".into(), s(u.method.as_str()));
    if let Some(m) = &u.multipart {
        attrs.insert("part_size".into(), n(m.part_size));
        attrs.insert("part_count".into(), n(m.part_count));
        attrs.insert("multipart_id".into(), s(&m.store_id));
    }
    if u.state == UploadState::Pending {
        attrs.insert("pending_shard".into(), s(pending_shard(u.id)));
        attrs.insert("pending_expiry".into(), n(u.expires_at));
        attrs.insert("pending_author".into(), s(u.author.as_str()));
    }
    attrs.insert("ttl".into(), n(u.expires_at / 1000 + UPLOAD_RETENTION_SECS));
    attrs
}

/// An upload's place in [`SPACE_UPLOADS_INDEX`]: creation time, then id.
pub fn upload_order(u: &PendingUpload) -> String {
    format!("{:016}#{}", u.created_at, u.id)
}

/// The index of a user's pending uploads (keys only: they are only counted).
pub const PENDING_BY_AUTHOR_INDEX: &str = "pending-by-author";

pub fn pending_shard(id: UploadId) -> String {
    format!("P{}", id.as_uuid().as_u128() % u128::from(PENDING_SHARDS))
}

pub fn upload_from(attrs: &Attrs) -> Result<PendingUpload, StoreError> {
    let item = Item(attrs);
    let token_hash = hex::decode(item.str("token_hash")?)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| corrupt("attribute token_hash".into()))?;
    let id: UploadId = item
        .str("pk")?
        .strip_prefix("U#")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| corrupt("upload key".into()))?;
    Ok(PendingUpload {
        id,
        token_hash,
        space_id: item.parse("space_id")?,
        file_id: item.parse("file_id")?,
        base_version: item.opt_num("base_version")?,
        name: FileName::from_stored(item.str("name")?.to_owned()),
        size: item.num("size")?,
        sha256: item.sha256("sha256")?,
        content_type: item.opt_str("content_type")?.map(str::to_owned),
        metadata: item.metadata()?,
        blob_key: item.str("blob_key")?.to_owned(),
        author: item.user("author")?,
        created_at: item.num("created_at")?,
        expires_at: item.num("expires_at")?,
        state: item.parse::<UploadState>("state")?,
        committed_version: item.opt_num("committed_version")?,
        // Items written before multipart uploads existed are PUT uploads.
        method: match item.opt_str("method")? {
            Some(m) => m.parse().map_err(|e: Invalid| corrupt(e.0))?,
            None => UploadMethod::Put,
        },
        multipart: match item.opt_str("multipart_id")? {
            Some(store_id) => Some(Multipart {
                part_size: item.num("part_size")?,
                part_count: item.num("part_count")?,
                store_id: store_id.to_owned(),
            }),
            None => None,
        },
    })
}
