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
    max_depth: usize,
    introspection: bool,
}

/// What the limits look at in a document.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    aliases: usize,
    /// Asks for `__schema` or `__type`.
    introspects: bool,
    /// How deep its fields nest, introspection aside (`{ me { id } }` is 2).
    depth: usize,
    /// How many fields its operations select once every fragment is expanded where it
    /// is spread: what validation and execution walk.
    expanded: usize,
}

/// Most fields a document may select once its fragments are expanded. Fragments that
/// spread others twice over (`F0 { ...F1 ...F1 }`, thirty deep) make a small document
/// that expands to a billion fields, which validation would walk for minutes.
pub const MAX_EXPANDED_FIELDS: usize = 10_000;

/// How deep the standard introspection query (GraphiQL's, codegen's) nests: under
/// `__schema`, fields go about 15 deep (`ofType` nine times over). The depth limit of
/// ordinary queries does not apply to it; the schema's own backstop does.
pub const INTROSPECTION_DEPTH: usize = 24;

impl QueryCache {
    /// A cache whose documents may hold at most `max_aliases` aliased fields, nest at
    /// most `max_depth` deep (introspection aside), and may introspect the schema only if
    /// `introspection`.
    pub fn new(max_aliases: usize, max_depth: usize, introspection: bool) -> Self {
        Self {
            documents: Mutex::new(HashMap::new()),
            max_aliases,
            max_depth,
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
        if shape.expanded > MAX_EXPANDED_FIELDS {
            return Err(ServerError::new(
                format!(
                    "the query selects more than {MAX_EXPANDED_FIELDS} fields once its fragments are expanded"
                ),
                None,
            ));
        }
        if shape.depth > self.max_depth {
            return Err(ServerError::new(
                format!(
                    "the query nests {} fields deep; at most {} are allowed",
                    shape.depth, self.max_depth
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

/// The aliased fields in the document's operations and fragments, whether any of them
/// introspects the schema, and how deep the operations nest (fragments expanded where
/// they are spread; introspection's own fields not counted).
fn shape_of(doc: &ExecutableDocument) -> Shape {
    fn count(set: &SelectionSet, shape: &mut Shape) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    shape.aliases += usize::from(field.alias.is_some());
                    shape.introspects |= matches!(field.name.node.as_str(), "__schema" | "__type");
                    count(&field.selection_set.node, shape);
                }
                Selection::InlineFragment(fragment) => {
                    count(&fragment.node.selection_set.node, shape)
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut shape = Shape::default();
    for (_, op) in doc.operations.iter() {
        count(&op.node.selection_set.node, &mut shape);
    }
    for fragment in doc.fragments.values() {
        count(&fragment.node.selection_set.node, &mut shape);
    }
    let mut depths = HashMap::new();
    let mut sizes = HashMap::new();
    for (_, op) in doc.operations.iter() {
        let depth = depth_of(doc, &op.node.selection_set.node, &mut depths, 0);
        shape.depth = shape.depth.max(depth);
        let size = expanded_size(doc, &op.node.selection_set.node, &mut sizes, 0);
        shape.expanded = shape.expanded.saturating_add(size);
    }
    shape
}

/// How many fields `set` selects with its fragments expanded; each fragment's size is
/// computed once (`memo`; a cycle counts as nothing, validation refuses it).
fn expanded_size(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    memo: &mut HashMap<String, Option<usize>>,
    spread_depth: usize,
) -> usize {
    let mut size = 0usize;
    for item in &set.items {
        let more = match &item.node {
            Selection::Field(field) => 1usize.saturating_add(expanded_size(
                doc,
                &field.node.selection_set.node,
                memo,
                spread_depth,
            )),
            Selection::InlineFragment(fragment) => {
                expanded_size(doc, &fragment.node.selection_set.node, memo, spread_depth)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                match memo.get(name) {
                    Some(known) => known.unwrap_or(0),
                    None if spread_depth > doc.fragments.len() => 0,
                    None => {
                        memo.insert(name.to_owned(), None);
                        let fragment_size = doc.fragments.get(name).map_or(0, |f| {
                            expanded_size(doc, &f.node.selection_set.node, memo, spread_depth + 1)
                        });
                        memo.insert(name.to_owned(), Some(fragment_size));
                        fragment_size
                    }
                }
            }
        };
        size = size.saturating_add(more);
    }
    size
}

/// How deep `set` nests. Each fragment's depth is computed once (`memo`; `None` while
/// in progress, so a cycle, which validation refuses anyway, counts as nothing); the
/// recursion is bounded by the document's bracket nesting (`MAX_NESTING`) and the number
/// of fragments.
fn depth_of(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    memo: &mut HashMap<String, Option<usize>>,
    spread_depth: usize,
) -> usize {
    let mut deepest = 0;
    for item in &set.items {
        let depth = match &item.node {
            Selection::Field(field) => match field.node.name.node.as_str() {
                "__typename" | "__schema" | "__type" => 0,
                _ => 1 + depth_of(doc, &field.node.selection_set.node, memo, spread_depth),
            },
            Selection::InlineFragment(fragment) => {
                depth_of(doc, &fragment.node.selection_set.node, memo, spread_depth)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                match memo.get(name) {
                    Some(known) => known.unwrap_or(0),
                    None if spread_depth > doc.fragments.len() => 0,
                    None => {
                        memo.insert(name.to_owned(), None);
                        let depth = doc.fragments.get(name).map_or(0, |f| {
                            depth_of(doc, &f.node.selection_set.node, memo, spread_depth + 1)
                        });
                        memo.insert(name.to_owned(), Some(depth));
                        depth
                    }
                }
            }
        };
        deepest = deepest.max(depth);
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_fields_through_fragments_but_not_introspection() {
        let cache = QueryCache::new(30, 2, true);
        let shallow = "{ me { id } ...F } fragment F on Query { spaces { id } }";
        assert!(cache.prepare(&mut Request::new(shallow)).is_ok());
        let deep = "{ ...F } fragment F on Query { spaces { members { ...G } } } \
                    fragment G on Member { userId __typename }";
        let error = cache.prepare(&mut Request::new(deep)).unwrap_err();
        assert!(error.message.contains("3 fields deep"), "{}", error.message);
        let introspection = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
        assert!(cache.prepare(&mut Request::new(introspection)).is_ok());
    }

    /// Fragments that spread others twice over expand exponentially: refused before
    /// anything walks them.
    #[test]
    fn fragment_fan_out_is_refused() {
        let cache = QueryCache::new(30, 12, true);
        let mut doc = String::from("{ ...F0 }");
        for i in 0..30 {
            doc.push_str(&format!(
                " fragment F{i} on Query {{ ...F{n} ...F{n} }}",
                n = i + 1
            ));
        }
        doc.push_str(" fragment F30 on Query { me { id } }");
        let error = cache.prepare(&mut Request::new(doc)).unwrap_err();
        assert!(
            error.message.contains("fragments are expanded"),
            "{}",
            error.message
        );
    }

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
        let cache = QueryCache::new(3, 12, true);
        let query = "query { a: me { id } b: me { i: id } ...F ... on Query { c: me { id } } } \
                     fragment F on Query { d: me { id } }";
        let mut request = Request::new(query);
        let error = cache.prepare(&mut request).unwrap_err();
        assert!(error.message.contains("5 aliases"), "{}", error.message);
        let mut request = Request::new("{ a: me { id } b: me { id } }");
        cache.prepare(&mut request).unwrap();
        // Cached documents are checked as well.
        let strict = QueryCache::new(1, 12, true);
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
