//! A cache of parsed query documents. Clients send the same few operations over and
//! over; parsing is a large share of a small mutation's cost, cloning a parsed document
//! is not. (Done on the request rather than as a schema extension: any extension adds a
//! hook call to every field resolved, which slowed large pages.) Parse errors are not
//! cached: each bad query is parsed and reported anew.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, ServerError};

/// Distinct documents kept; past this the cache starts over (a client generating unique
/// queries cannot grow memory, and the common operations are back within a request).
const CAPACITY: usize = 512;
/// Queries longer than this are parsed every time rather than kept.
const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of brackets (`{`, `[`, `(`) a query may have. The parser and every
/// walk of a parsed value recurse once per level: a few thousand levels overflow a
/// worker's stack and abort the process. Real queries stay far below this (GraphiQL's
/// introspection query nests about 20 deep); JSON variables are bounded by serde_json
/// (128 levels).
pub const MAX_NESTING: usize = 64;

pub struct QueryCache {
    // A std Mutex: held for one lookup or insert, never across an await.
    documents: Mutex<HashMap<String, (ExecutableDocument, Shape)>>,
    max_aliases: usize,
    introspection: bool,
}

/// What the limits look at in a document.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    aliases: usize,
    /// Asks for `__schema` or `__type`.
    introspects: bool,
}

impl QueryCache {
    /// A cache whose documents may hold at most `max_aliases` aliased fields, and may
    /// introspect the schema only if `introspection`.
    pub fn new(max_aliases: usize, introspection: bool) -> Self {
        Self {
            documents: Mutex::new(HashMap::new()),
            max_aliases,
            introspection,
        }
    }

    /// Gives `request` its parsed document, from the cache or freshly parsed; refuses a
    /// document with more aliases than allowed (aliases multiply the work one request
    /// asks for: `a1: file(...) a2: file(...) ...`).
    pub fn prepare(&self, request: &mut Request) -> Result<(), ServerError> {
        check_nesting(&request.query)?;
        let cached = self
            .documents
            .lock()
            .expect("query cache poisoned")
            .get(&request.query)
            .cloned();
        if let Some((doc, shape)) = cached {
            self.check(shape)?;
            request.set_parsed_query(doc);
            return Ok(());
        }
        // On a syntax error, leave the request as it is: execution reports the error.
        let Ok(doc) = request.parsed_query().cloned() else {
            return Ok(());
        };
        let shape = shape_of(&doc);
        self.check(shape)?;
        if request.query.len() <= MAX_QUERY_BYTES {
            let mut documents = self.documents.lock().expect("query cache poisoned");
            if documents.len() >= CAPACITY {
                documents.clear();
            }
            documents.insert(request.query.clone(), (doc, shape));
        }
        Ok(())
    }

    fn check(&self, shape: Shape) -> Result<(), ServerError> {
        if shape.aliases > self.max_aliases {
            return Err(ServerError::new(
                format!(
                    "the query has {} aliases; at most {} are allowed",
                    shape.aliases, self.max_aliases
                ),
                None,
            ));
        }
        if shape.introspects && !self.introspection {
            return Err(ServerError::new(
                "introspection is disabled on this server",
                None,
            ));
        }
        Ok(())
    }
}

/// Refuses a query whose brackets nest deeper than [`MAX_NESTING`], before anything parses
/// or walks it. One pass over the bytes: strings, block strings and comments are skipped
/// (every delimiter is ASCII, so a byte scan is safe on UTF-8).
pub fn check_nesting(query: &str) -> Result<(), ServerError> {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_NESTING {
                    return Err(ServerError::new(
                        format!("the query nests deeper than {MAX_NESTING} levels"),
                        None,
                    ));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The aliased fields in the document's operations and fragments, and whether any of
/// them introspects the schema.
fn shape_of(doc: &ExecutableDocument) -> Shape {
    fn walk(set: &SelectionSet, shape: &mut Shape) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    shape.aliases += usize::from(field.alias.is_some());
                    shape.introspects |= matches!(field.name.node.as_str(), "__schema" | "__type");
                    walk(&field.selection_set.node, shape);
                }
                Selection::InlineFragment(fragment) => {
                    walk(&fragment.node.selection_set.node, shape)
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut shape = Shape::default();
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set.node, &mut shape);
    }
    for fragment in doc.fragments.values() {
        walk(&fragment.node.selection_set.node, &mut shape);
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings_and_comments() {
        let deep = |open: &str, close: &str, n: usize| {
            format!("{{ f(a: {}1{}) }}", open.repeat(n), close.repeat(n))
        };
        assert!(check_nesting(&deep("[", "]", 60)).is_ok());
        assert!(check_nesting(&deep("[", "]", 63)).is_err());
        assert!(check_nesting(&deep("{a:", "}", 100_000)).is_err());
        let quoted = format!(
            "{{ f(a: \"{}\" b: \"\"\"{}\\\"\"\"\"\"\") }} # {}",
            "[".repeat(500),
            "{".repeat(500),
            "(".repeat(500)
        );
        assert!(
            check_nesting(&quoted).is_ok(),
            "brackets in strings and comments"
        );
        let after = format!("{quoted}\n{}", deep("[", "]", 100));
        assert!(check_nesting(&after).is_err(), "a comment ends at its line");
    }

    #[test]
    fn aliases_are_counted_everywhere_and_limited() {
        let cache = QueryCache::new(3, true);
        let query = "query { a: me { id } b: me { i: id } ...F ... on Query { c: me { id } } } \
                     fragment F on Query { d: me { id } }";
        let mut request = Request::new(query);
        let error = cache.prepare(&mut request).unwrap_err();
        assert!(error.message.contains("5 aliases"), "{}", error.message);
        let mut request = Request::new("{ a: me { id } b: me { id } }");
        cache.prepare(&mut request).unwrap();
        // Cached documents are checked as well.
        let strict = QueryCache::new(1, true);
        strict
            .prepare(&mut Request::new("{ a: me { id } }"))
            .unwrap();
        assert!(
            strict
                .prepare(&mut Request::new("{ a: me { id } b: me { id } }"))
                .is_err()
        );
        assert!(
            strict
                .prepare(&mut Request::new("{ a: me { id } b: me { id } }"))
                .is_err()
        );
    }
}
