//! A cache of parsed query documents. Clients send the same few operations over and
//! over; parsing is a large share of a small mutation's cost, cloning a parsed document
//! is not. Parse errors are not cached (each bad query is parsed and reported anew).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerResult, Variables};

/// Distinct documents kept; past this the cache starts over (a client generating unique
/// queries cannot grow memory, and the common operations are back within a request).
const CAPACITY: usize = 512;
/// Queries longer than this are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub struct QueryCache {
    documents: Arc<Mutex<HashMap<String, ExecutableDocument>>>,
}

struct QueryCacheExtension {
    documents: Arc<Mutex<HashMap<String, ExecutableDocument>>>,
}

impl ExtensionFactory for QueryCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryCacheExtension {
            documents: self.documents.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Extension for QueryCacheExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // A std Mutex: held for a lookup or an insert, never across an await.
        if let Some(doc) = self.documents.lock().expect("cache poisoned").get(query) {
            return Ok(doc.clone());
        }
        let doc = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_QUERY_BYTES {
            let mut documents = self.documents.lock().expect("cache poisoned");
            if documents.len() >= CAPACITY {
                documents.clear();
            }
            documents.insert(query.to_owned(), doc.clone());
        }
        Ok(doc)
    }
}
