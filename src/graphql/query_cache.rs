//! A cache of parsed query documents. Clients send the same few operations over and
//! over; parsing is a large share of a small mutation's cost, cloning a parsed document
//! is not. (Done on the request rather than as a schema extension: any extension adds a
//! hook call to every field resolved, which slowed large pages.) Parse errors are not
//! cached: each bad query is parsed and reported anew.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::Request;
use async_graphql::parser::types::ExecutableDocument;

/// Distinct documents kept; past this the cache starts over (a client generating unique
/// queries cannot grow memory, and the common operations are back within a request).
const CAPACITY: usize = 512;
/// Queries longer than this are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub struct QueryCache {
    // A std Mutex: held for one lookup or insert, never across an await.
    documents: Mutex<HashMap<String, ExecutableDocument>>,
}

impl QueryCache {
    /// Gives `request` its parsed document, from the cache or freshly parsed.
    pub fn prepare(&self, request: &mut Request) {
        let cached = self
            .documents
            .lock()
            .expect("query cache poisoned")
            .get(&request.query)
            .cloned();
        if let Some(doc) = cached {
            request.set_parsed_query(doc);
            return;
        }
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        // On a syntax error, leave the request as it is: execution reports the error.
        let Ok(doc) = request.parsed_query().cloned() else {
            return;
        };
        let mut documents = self.documents.lock().expect("query cache poisoned");
        if documents.len() >= CAPACITY {
            documents.clear();
        }
        documents.insert(request.query.clone(), doc);
    }
}
