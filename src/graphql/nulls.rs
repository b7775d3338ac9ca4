//! What the GraphQL spec says a response holds where async-graphql 7 differs:
//!
//! - a field that raised an error is `null` (async-graphql leaves its key out); when its
//!   type is non-null, the `null` goes up to the nearest nullable field, and to `data`
//!   itself when there is none ("Handling Field Errors");
//! - a non-null object whose every field was skipped (`nodes { id @skip(if: true) }`) is
//!   `{}` (async-graphql answers `null`).
//!
//! The response is mended after execution with the schema's types (from its SDL) and the
//! operation's selections (to map response keys to fields). It only runs on responses
//! with errors, or from documents that use `@skip` or `@include`.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
    TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, PathSegment, Response, Value};

/// The schema's object types: their fields and each field's type.
pub struct Types {
    objects: HashMap<String, HashMap<String, Type>>,
}

impl Types {
    /// The types of the schema whose SDL is `sdl`.
    pub fn from_sdl(sdl: &str) -> Self {
        let mut objects = HashMap::new();
        if let Ok(doc) = async_graphql::parser::parse_schema(sdl) {
            for definition in doc.definitions {
                let TypeSystemDefinition::Type(ty) = definition else {
                    continue;
                };
                let ty = ty.node;
                let fields = match ty.kind {
                    TypeKind::Object(o) => o.fields,
                    TypeKind::Interface(i) => i.fields,
                    _ => continue,
                };
                let fields = fields
                    .into_iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node))
                    .collect();
                objects.insert(ty.name.node.to_string(), fields);
            }
        }
        Self { objects }
    }

    /// Mends `response` (see the module doc) for the operation it answered.
    pub fn mend(&self, doc: &ExecutableDocument, operation: Option<&str>, response: &mut Response) {
        let op = match (&doc.operations, operation) {
            (DocumentOperations::Single(op), _) => &op.node,
            (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
                Some(op) => &op.node,
                None => return,
            },
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                &ops.values().next().expect("one operation").node
            }
            _ => return,
        };
        let root = match op.ty {
            OperationType::Query => "Query",
            OperationType::Mutation => "Mutation",
            OperationType::Subscription => "Subscription",
        };
        let context = Context { doc, types: self };
        let roots = vec![&op.selection_set.node];
        let errors: Vec<Vec<PathSegment>> = response
            .errors
            .iter()
            .map(|e| e.path.clone())
            .filter(|p| !p.is_empty())
            .collect();
        for path in &errors {
            if context.null_out(&mut response.data, root, &roots, path) {
                // A non-null root field failed: `data` itself is null.
                response.data = Value::Null;
                return;
            }
        }
        if response.data == Value::Null && response.errors.is_empty() {
            // Every root field was skipped (a request error has no `data` at all).
            response.data = Value::Object(Default::default());
        }
        if response.data != Value::Null {
            let mut at = Vec::new();
            context.empty_objects(&mut response.data, root, &roots, &errors, &mut at);
        }
    }
}

struct Context<'a> {
    doc: &'a ExecutableDocument,
    types: &'a Types,
}

impl<'a> Context<'a> {
    /// The field a response key names in `sets` (of an object of type `parent`): its type
    /// and the selections under it.
    fn field(
        &self,
        parent: &str,
        sets: &[&'a SelectionSet],
        key: &str,
    ) -> Option<(Type, Vec<&'a SelectionSet>)> {
        let mut name = None;
        let mut subs = Vec::new();
        for set in sets {
            self.collect(set, key, &mut name, &mut subs, 0);
        }
        let name = name?;
        let ty = self.types.objects.get(parent)?.get(&name)?.clone();
        Some((ty, subs))
    }

    fn collect(
        &self,
        set: &'a SelectionSet,
        key: &str,
        name: &mut Option<String>,
        subs: &mut Vec<&'a SelectionSet>,
        spreads: usize,
    ) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if field.response_key().node.as_str() == key {
                        name.get_or_insert_with(|| field.name.node.to_string());
                        subs.push(&field.selection_set.node);
                    }
                }
                Selection::InlineFragment(f) => {
                    self.collect(&f.node.selection_set.node, key, name, subs, spreads)
                }
                Selection::FragmentSpread(s) if spreads <= self.doc.fragments.len() => {
                    if let Some(f) = self.doc.fragments.get(&s.node.fragment_name.node) {
                        self.collect(&f.node.selection_set.node, key, name, subs, spreads + 1);
                    }
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }

    /// Puts an object's keys back in the order of the selection (a key added for a field
    /// that failed went to the end).
    fn reorder(
        &self,
        object: &mut async_graphql::indexmap::IndexMap<Name, Value>,
        sets: &[&'a SelectionSet],
    ) {
        let mut order: Vec<String> = Vec::new();
        for set in sets {
            self.keys(set, &mut order, 0);
        }
        object.sort_by_cached_key(|key, _| {
            order
                .iter()
                .position(|k| k == key.as_str())
                .unwrap_or(usize::MAX)
        });
    }

    fn keys(&self, set: &'a SelectionSet, order: &mut Vec<String>, spreads: usize) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let key = field.node.response_key().node.to_string();
                    if !order.contains(&key) {
                        order.push(key);
                    }
                }
                Selection::InlineFragment(f) => {
                    self.keys(&f.node.selection_set.node, order, spreads)
                }
                Selection::FragmentSpread(s) if spreads <= self.doc.fragments.len() => {
                    if let Some(f) = self.doc.fragments.get(&s.node.fragment_name.node) {
                        self.keys(&f.node.selection_set.node, order, spreads + 1);
                    }
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }

    /// Sets the value at `path` (which raised an error) to null, and nulls its parents
    /// while what was nulled is non-null. `true` when that reaches `data` itself.
    fn null_out(
        &self,
        value: &mut Value,
        parent: &str,
        sets: &[&'a SelectionSet],
        path: &[PathSegment],
    ) -> bool {
        let Some(PathSegment::Field(key)) = path.first() else {
            return false;
        };
        let Some((ty, subs)) = self.field(parent, sets, key) else {
            return false;
        };
        if *value == Value::Null {
            // An object all of whose selected fields failed comes back null: it is an
            // object with those fields null.
            *value = Value::Object(Default::default());
        }
        let Value::Object(object) = value else {
            return false;
        };
        let fresh = !object.contains_key(key.as_str());
        let entry = object.entry(Name::new(key)).or_insert(Value::Null);
        let nulled = if path.len() == 1 {
            *entry = Value::Null;
            true
        } else {
            self.null_in(entry, &ty, &subs, &path[1..])
        };
        if fresh {
            self.reorder(object, sets);
        }
        // What was nulled (this field) takes its parent object with it when non-null.
        if nulled && !ty.nullable {
            *value = Value::Null;
            return true;
        }
        false
    }

    /// Within a field's value of type `ty`: nulls what `path` leads to; `true` when the
    /// value itself must become null (its non-null content was nulled).
    fn null_in(
        &self,
        value: &mut Value,
        ty: &Type,
        subs: &[&'a SelectionSet],
        path: &[PathSegment],
    ) -> bool {
        match (&ty.base, path.first()) {
            (BaseType::List(inner), Some(PathSegment::Index(i))) => {
                let Value::List(items) = value else {
                    return false;
                };
                let Some(item) = items.get_mut(*i) else {
                    return false;
                };
                let item_nulled = if path.len() == 1 {
                    *item = Value::Null;
                    true
                } else {
                    self.null_in(item, inner, subs, &path[1..])
                };
                if item_nulled && !inner.nullable {
                    *value = Value::Null;
                    return true;
                }
                if item_nulled {
                    *item = Value::Null;
                }
                false
            }
            (BaseType::Named(name), Some(PathSegment::Field(_))) => {
                if self.null_out(value, name, subs, path) {
                    *value = Value::Null;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Turns `null` into `{}` where a non-null object's every field was skipped: a null
    /// at a non-null object position that no error explains.
    fn empty_objects(
        &self,
        value: &mut Value,
        parent: &str,
        sets: &[&'a SelectionSet],
        errors: &[Vec<PathSegment>],
        at: &mut Vec<PathSegment>,
    ) {
        let Value::Object(object) = value else {
            return;
        };
        for (key, child) in object.iter_mut() {
            let Some((ty, subs)) = self.field(parent, sets, key.as_str()) else {
                continue;
            };
            at.push(PathSegment::Field(key.to_string()));
            self.empty_in(child, &ty, &subs, errors, at);
            at.pop();
        }
    }

    fn empty_in(
        &self,
        value: &mut Value,
        ty: &Type,
        subs: &[&'a SelectionSet],
        errors: &[Vec<PathSegment>],
        at: &mut Vec<PathSegment>,
    ) {
        match (&ty.base, value) {
            (BaseType::List(inner), Value::List(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    at.push(PathSegment::Index(i));
                    self.empty_in(item, inner, subs, errors, at);
                    at.pop();
                }
            }
            (BaseType::Named(name), value) if self.types.objects.contains_key(name.as_str()) => {
                if *value == Value::Null {
                    let explained = errors.iter().any(|e| e.starts_with(at));
                    if !ty.nullable && !explained {
                        *value = Value::Object(Default::default());
                    }
                    return;
                }
                self.empty_objects(value, name, subs, errors, at);
            }
            _ => {}
        }
    }
}

/// Whether a document uses `@skip` or `@include` anywhere (only then can a selection
/// come out empty).
pub fn uses_conditions(doc: &ExecutableDocument) -> bool {
    fn in_set(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| {
            let directives = match &item.node {
                Selection::Field(f) => &f.node.directives,
                Selection::InlineFragment(f) => &f.node.directives,
                Selection::FragmentSpread(s) => &s.node.directives,
            };
            directives
                .iter()
                .any(|d| matches!(d.node.name.node.as_str(), "skip" | "include"))
                || match &item.node {
                    Selection::Field(f) => in_set(&f.node.selection_set.node),
                    Selection::InlineFragment(f) => in_set(&f.node.selection_set.node),
                    Selection::FragmentSpread(_) => false,
                }
        })
    }
    doc.operations
        .iter()
        .any(|(_, op)| in_set(&op.node.selection_set.node))
        || doc
            .fragments
            .values()
            .any(|f| in_set(&f.node.selection_set.node))
}
