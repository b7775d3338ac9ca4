//! A seeded, time-bounded fuzz test generated from `schema.graphql`: every root field of
//! every root type, called with random and hostile argument values (as literals and as
//! variables), with random selections, as a member, a stranger and nobody, over POST,
//! GET and the websocket. Nothing may crash the server, answer 5xx or say `INTERNAL`.
//!
//! `FUZZ_SEED` replays a run; `FUZZ_SECONDS` sets its length (default 15).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::ws_client::TRANSPORT_WS;

/// The schema, as the fuzzer needs it: each type's fields (with arguments), each input
/// type's fields, each enum's values.
struct Schema {
    objects: HashMap<String, Vec<Field>>,
    inputs: HashMap<String, Vec<(String, Type)>>,
    enums: HashMap<String, Vec<String>>,
}

struct Field {
    name: String,
    args: Vec<(String, Type)>,
    ty: Type,
}

fn schema() -> Schema {
    let sdl = include_str!("../../schema.graphql");
    let doc = async_graphql::parser::parse_schema(sdl).expect("schema.graphql parses");
    let mut schema = Schema {
        objects: HashMap::new(),
        inputs: HashMap::new(),
        enums: HashMap::new(),
    };
    for def in doc.definitions {
        let TypeSystemDefinition::Type(ty) = def else {
            continue;
        };
        let name = ty.node.name.node.to_string();
        match ty.node.kind {
            TypeKind::Object(o) => {
                let fields = o
                    .fields
                    .into_iter()
                    .map(|f| Field {
                        name: f.node.name.node.to_string(),
                        args: f
                            .node
                            .arguments
                            .into_iter()
                            .map(|a| (a.node.name.node.to_string(), a.node.ty.node))
                            .collect(),
                        ty: f.node.ty.node,
                    })
                    .collect();
                schema.objects.insert(name, fields);
            }
            TypeKind::InputObject(i) => {
                let fields = i
                    .fields
                    .into_iter()
                    .map(|f| (f.node.name.node.to_string(), f.node.ty.node))
                    .collect();
                schema.inputs.insert(name, fields);
            }
            TypeKind::Enum(e) => {
                let values = e
                    .values
                    .into_iter()
                    .map(|v| v.node.value.node.to_string())
                    .collect();
                schema.enums.insert(name, values);
            }
            _ => {}
        }
    }
    schema
}

/// Real values worth hitting: ids of things that exist, cursors, tokens.
struct Known {
    ids: Vec<String>,
    cursors: Vec<String>,
}

/// Hostile strings: empty, huge, control and bidirectional characters, paths, injections.
const NASTY: &[&str] = &[
    "",
    " ",
    "..",
    "../../etc/passwd",
    "/abs",
    "a\\b",
    "\u{0}",
    "\u{202e}gnp.exe",
    "\u{200b}",
    "\u{2028}",
    "CON",
    "a.txt.",
    "%00",
    "'; DROP TABLE files; --",
    "{\"$ne\": null}",
    "\u{1F4A9}",
    "\u{FF0F}",
    "null",
    "-1",
    "1e309",
    "NaN",
    "00000000-0000-0000-0000-000000000000",
];

fn nasty_string(rng: &mut StdRng, known: &Known) -> Value {
    match rng.random_range(0..8) {
        0 => json!(NASTY[rng.random_range(0..NASTY.len())]),
        1 => json!("x".repeat(rng.random_range(1000..70_000))),
        2 if !known.ids.is_empty() => json!(known.ids[rng.random_range(0..known.ids.len())]),
        3 if !known.cursors.is_empty() => {
            json!(known.cursors[rng.random_range(0..known.cursors.len())])
        }
        4 => json!(uuid::Uuid::new_v4().to_string()),
        5 => {
            let chars: String = (0..rng.random_range(1..40))
                .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('?'))
                .collect();
            json!(chars)
        }
        _ => json!(format!("docs/f{}.txt", rng.random_range(0..5))),
    }
}

/// A value for `ty`: usually of the right type, sometimes hostile or of the wrong one.
fn value(rng: &mut StdRng, schema: &Schema, known: &Known, ty: &Type, depth: usize) -> Value {
    if ty.nullable && rng.random_bool(0.2) {
        return Value::Null;
    }
    if rng.random_bool(0.05) {
        // The wrong type altogether.
        return match rng.random_range(0..4) {
            0 => json!(rng.random::<i64>()),
            1 => json!([1, [2, [3]]]),
            2 => json!({ "x": "y" }),
            _ => json!(true),
        };
    }
    match &ty.base {
        BaseType::List(inner) => {
            let n = if rng.random_bool(0.1) {
                rng.random_range(100..2000)
            } else {
                rng.random_range(0..4)
            };
            Value::Array(
                (0..n)
                    .map(|_| value(rng, schema, known, inner, depth + 1))
                    .collect(),
            )
        }
        BaseType::Named(name) => match name.as_str() {
            "Int" => json!(match rng.random_range(0..6) {
                0 => 0,
                1 => -1,
                2 => i64::from(i32::MAX),
                3 => i64::from(i32::MIN),
                4 => rng.random_range(1..2000),
                _ => rng.random_range(-10..10),
            }),
            "Size" => json!(match rng.random_range(0..5) {
                0 => json!(0),
                1 => json!(-5),
                2 => json!(9_007_199_254_740_993_u64),
                3 => json!(1.5),
                _ => json!(rng.random_range(0..10_000_000)),
            }),
            "Boolean" => json!(rng.random_bool(0.5)),
            "Float" => json!(rng.random::<f64>()),
            "String" | "ID" | "Cursor" | "DateTime" | "Upload" => nasty_string(rng, known),
            other if schema.enums.contains_key(other) => {
                let values = &schema.enums[other];
                if rng.random_bool(0.1) {
                    json!("NOT_A_VALUE")
                } else {
                    json!(values[rng.random_range(0..values.len())])
                }
            }
            other if depth < 4 => match schema.inputs.get(other) {
                Some(fields) => {
                    let mut object = serde_json::Map::new();
                    for (name, ty) in fields {
                        if !ty.nullable || rng.random_bool(0.6) {
                            object.insert(name.clone(), value(rng, schema, known, ty, depth + 1));
                        }
                    }
                    Value::Object(object)
                }
                None => Value::Null,
            },
            _ => Value::Null,
        },
    }
}

/// A selection of `ty`'s fields (scalars, and objects a little deeper).
fn selection(rng: &mut StdRng, schema: &Schema, known: &Known, ty: &Type, depth: usize) -> String {
    let name = named(ty);
    let Some(fields) = schema.objects.get(name) else {
        return String::new();
    };
    let mut picked = vec!["__typename".to_owned()];
    for field in fields {
        if !rng.random_bool(0.5) {
            continue;
        }
        let sub = if schema.objects.contains_key(named(&field.ty)) {
            if depth >= 3 {
                continue;
            }
            selection(rng, schema, known, &field.ty, depth + 1)
        } else {
            String::new()
        };
        let args = arguments(rng, schema, known, &field.args);
        picked.push(format!("{}{args} {sub}", field.name));
    }
    format!("{{ {} }}", picked.join(" "))
}

fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(n) => n.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

/// Literal arguments (GraphQL syntax, from the JSON values).
fn arguments(rng: &mut StdRng, schema: &Schema, known: &Known, args: &[(String, Type)]) -> String {
    let mut given = Vec::new();
    for (name, ty) in args {
        if ty.nullable && rng.random_bool(0.5) {
            continue;
        }
        let value = value(rng, schema, known, ty, 0);
        given.push(format!("{name}: {}", literal(&value, ty)));
    }
    if given.is_empty() {
        String::new()
    } else {
        format!("({})", given.join(", "))
    }
}

fn literal(value: &Value, ty: &Type) -> String {
    let enum_like = matches!(&ty.base, BaseType::Named(n) if n.as_str() == "Role" || n.as_str() == "ChangeKind");
    match value {
        Value::String(s)
            if enum_like && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            s.clone()
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| literal(i, ty))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{k}: {}", literal(v, ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn type_string(ty: &Type) -> String {
    ty.to_string()
}

/// One call of root field `field` on `root`, as a document with variables.
fn call(
    rng: &mut StdRng,
    schema: &Schema,
    known: &Known,
    root: &str,
    field: &Field,
) -> (String, Value) {
    let keyword = match root {
        "Mutation" => "mutation",
        "Subscription" => "subscription",
        _ => "query",
    };
    let sub = selection(rng, schema, known, &field.ty, 1);
    if rng.random_bool(0.5) {
        // As variables.
        let mut decls = Vec::new();
        let mut vars = serde_json::Map::new();
        let mut uses = Vec::new();
        for (name, ty) in &field.args {
            if ty.nullable && rng.random_bool(0.4) {
                continue;
            }
            decls.push(format!("${name}: {}", type_string(ty)));
            uses.push(format!("{name}: ${name}"));
            vars.insert(name.clone(), value(rng, schema, known, ty, 0));
        }
        let decls = if decls.is_empty() {
            String::new()
        } else {
            format!("({})", decls.join(", "))
        };
        let uses = if uses.is_empty() {
            String::new()
        } else {
            format!("({})", uses.join(", "))
        };
        (
            format!("{keyword} F{decls} {{ {}{uses} {sub} }}", field.name),
            Value::Object(vars),
        )
    } else {
        let args = arguments(rng, schema, known, &field.args);
        (
            format!("{keyword} {{ {}{args} {sub} }}", field.name),
            json!({}),
        )
    }
}

fn assert_no_internal(body: &Value, what: &str) {
    for error in body["errors"].as_array().into_iter().flatten() {
        assert_ne!(error["extensions"]["code"], "INTERNAL", "{what}: {body}");
    }
}

#[tokio::test]
async fn fuzzing_every_root_field_finds_no_crash_no_5xx_and_no_internal_error() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    eprintln!("FUZZ_SEED={seed} FUZZ_SECONDS={seconds}");
    let mut rng = StdRng::seed_from_u64(seed);
    let schema = schema();
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let file = app
        .upload_id("alice", &space, "docs/f0.txt", b"hello")
        .await;
    let head = app.changes("alice", &space, None, None).await["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let known = Known {
        ids: vec![space.clone(), file.clone(), "alice".into(), "bob".into()],
        cursors: vec![head],
    };
    let roots: Vec<(&str, &Field)> = ["Query", "Mutation", "Subscription"]
        .iter()
        .flat_map(|root| schema.objects[*root].iter().map(move |f| (*root, f)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut calls = 0;
    let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
    while Instant::now() < deadline {
        let (root, field) = roots[rng.random_range(0..roots.len())];
        let (query, variables) = call(&mut rng, &schema, &known, root, field);
        let user = match rng.random_range(0..4) {
            0 => None,
            1 => Some("mallory"),
            _ => Some("alice"),
        };
        calls += 1;
        let what = format!(
            "call {calls}: {}",
            query.chars().take(300).collect::<String>()
        );
        // A websocket message above the server's request limit closes the connection
        // (close code 1009), as it should: such documents go over HTTP, which answers
        // 413 with a code.
        let fits_a_message = query.len() + variables.to_string().len() < 15 << 20;
        match (root, rng.random_range(0..3)) {
            ("Subscription", _) | (_, 0) if fits_a_message => {
                // The websocket (both kinds of operation run there).
                let id = format!("f{calls}");
                ws.subscribe(&id, &query, variables).await;
                let reply = ws
                    .recv()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: socket closed {e:?}"));
                assert!(
                    !reply.to_string().contains("\"INTERNAL\""),
                    "{what}: {reply}"
                );
                ws.send(json!({ "type": "complete", "id": id })).await;
            }
            // GET, for what fits in a URL.
            ("Query", 1) if query.len() + variables.to_string().len() < 16_000 => {
                let mut req = app.client.get(format!("{}/graphql", app.base)).query(&[
                    ("query", query.as_str()),
                    ("variables", &variables.to_string()),
                ]);
                if let Some(user) = user {
                    req = req.bearer_auth(app.token(user));
                }
                let res = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                let status = res.status();
                assert!(status.as_u16() < 500, "{what}: HTTP {status}");
                if let Ok(body) = res.json::<Value>().await {
                    assert_no_internal(&body, &what);
                }
            }
            _ => {
                let mut req = app
                    .client
                    .post(format!("{}/graphql", app.base))
                    .json(&json!({ "query": query, "variables": variables }));
                if let Some(user) = user {
                    req = req.bearer_auth(app.token(user));
                }
                let res = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                let status = res.status();
                assert!(
                    status.as_u16() < 500 && status != 429,
                    "{what}: HTTP {status}"
                );
                let body: Value = res.json().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_no_internal(&body, &what);
            }
        }
    }
    eprintln!("{calls} calls");
    // Still serving, and the data it had is whole.
    assert_eq!(app.file("alice", &file).await["id"], file.as_str());
    let _: &TestApp = &app;
}
