//! `[File!]!` for large pages (`changes.files`), with a fast path.
//!
//! A sync client pages through `changes` 1,000 files at a time and asks for a handful of
//! scalar fields. async-graphql's generic resolution (a boxed future per field, a
//! concurrent future set per list) cost several times more than computing the fields.
//! When the selection on the files is plain scalar fields (no fragments, directives or
//! arguments), this builds each file's value directly, in the selection's order.
//! Anything else goes through the generic resolver, whose output is the same: the API
//! tests compare the two paths field by field.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection};
use async_graphql::registry::Registry;
use async_graphql::{
    ContextSelectionSet, ErrorExtensions, Name, OutputType, Positioned, ScalarType, ServerResult,
    Value,
};
use indexmap::IndexMap;

use super::error::to_gql;
use super::scalars::{Cursor, Size};
use super::service;
use super::types::{File, datetime};
use crate::domain;

pub struct FileList(pub Vec<File>);

/// The fields the fast path computes itself.
const FAST_FIELDS: &[&str] = &[
    "__typename",
    "id",
    "spaceId",
    "name",
    "version",
    "size",
    "sha256",
    "contentType",
    "creator",
    "createdAt",
    "updatedAt",
    "deleted",
    "cursor",
    "downloadUrl",
];

impl OutputType for FileList {
    fn type_name() -> Cow<'static, str> {
        Vec::<File>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<File>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Vec::<File>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        match plain_scalar_selection(field) {
            Some(selection) => self.resolve_fast(ctx, field, &selection).await,
            None => self.resolve_generic(ctx, field).await,
        }
    }
}

/// `(response key, field name)` of each selected field, if every one is a plain scalar.
fn plain_scalar_selection(field: &Positioned<Field>) -> Option<Vec<(Name, &str)>> {
    let mut selection = Vec::new();
    for item in &field.node.selection_set.node.items {
        let Selection::Field(f) = &item.node else {
            return None;
        };
        let f = &f.node;
        let name = f.name.node.as_str();
        let plain = f.arguments.is_empty()
            && f.directives.is_empty()
            && f.selection_set.node.items.is_empty()
            && FAST_FIELDS.contains(&name);
        if !plain {
            return None;
        }
        selection.push((f.response_key().node.clone(), name));
    }
    Some(selection)
}

impl FileList {
    async fn resolve_fast(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
        selection: &[(Name, &str)],
    ) -> ServerResult<Value> {
        let mut items = Vec::with_capacity(self.0.len());
        for file in &self.0 {
            let f = &file.0;
            let mut object = IndexMap::with_capacity(selection.len());
            for (key, name) in selection {
                let value = match *name {
                    "__typename" => Value::String("File".into()),
                    "id" => Value::String(f.id.to_string()),
                    "spaceId" => Value::String(f.space_id.to_string()),
                    "name" => Value::String(f.name.as_str().to_owned()),
                    "version" => Value::from(f.version),
                    "size" => Size(f.content.size).to_value(),
                    "sha256" => Value::String(f.content.sha256.to_hex()),
                    "contentType" => f
                        .content
                        .content_type
                        .as_ref()
                        .map_or(Value::Null, |ct| Value::String(ct.clone())),
                    "creator" => Value::String(f.creator.to_string()),
                    "createdAt" => datetime(f.created_at).to_value(),
                    "updatedAt" => datetime(f.updated_at).to_value(),
                    "deleted" => Value::Boolean(f.deleted),
                    "cursor" => Cursor::from(domain::Cursor::new(f.space_id, f.seq)).to_value(),
                    "downloadUrl" => match service(&ctx.with_field(field)).download_url(f).await {
                        Ok(url) => url.map_or(Value::Null, Value::String),
                        // As in the generic path: the field is null and the error reported.
                        Err(e) => {
                            ctx.add_error(to_gql(e).extend().into_server_error(field.pos));
                            Value::Null
                        }
                    },
                    other => unreachable!("{other} is not in FAST_FIELDS"),
                };
                object.insert(key.clone(), value);
            }
            items.push(Value::Object(object));
        }
        Ok(Value::List(items))
    }

    /// Items one after the other (no concurrent future set), each by the generic resolver.
    async fn resolve_generic(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let mut items = Vec::with_capacity(self.0.len());
        for (idx, file) in self.0.iter().enumerate() {
            let ctx_idx = ctx.with_index(idx);
            let item = OutputType::resolve(file, &ctx_idx, field)
                .await
                .map_err(|e| ctx_idx.set_error_path(e))?;
            items.push(item);
        }
        Ok(Value::List(items))
    }
}
