//! `schema.graphql` is generated from the code; it must not drift.

#[test]
fn schema_file_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let sdl = filesync::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).unwrap();
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == sdl,
        "schema.graphql is out of date: run `cargo run -- print-schema > schema.graphql` \
         (or UPDATE_SCHEMA=1 cargo test schema)"
    );
}

#[test]
fn the_contract_names_of_design_section_10_are_present() {
    let sdl = filesync::graphql::sdl();
    for needle in [
        "me: User!",
        // Paged since: without arguments it is the old call.
        "spaces(first: Int, after: ID): [Space!]!",
        "space(id: ID!): Space",
        "file(id: ID!, version: Int): File",
        "files(spaceId: ID!, prefix: String, first: Int, after: String): FileConnection!",
        // Paged since: the optional `first` and `after` leave old calls working.
        "fileVersions(id: ID!, first: Int, after: Int): [FileVersion!]!",
        "changes(spaceId: ID!, since: Cursor, limit: Int): ChangePage!",
        "createSpace(name: String!): Space!",
        "setMember(spaceId: ID!, userId: ID!, role: Role): Space!",
        "beginUpload(input: BeginUploadInput!): UploadTicket!",
        "commitUpload(uploadId: ID!, uploadToken: String!): File!",
        "cancelUpload(uploadId: ID!, uploadToken: String!): Boolean!",
        "updateFile(id: ID!, baseVersion: Int!, input: UpdateFileInput!): File!",
        "deleteFile(id: ID!, baseVersion: Int): File!",
        "restoreVersion(id: ID!, version: Int!, baseVersion: Int!): File!",
        "uploadFile(input: BeginUploadInput!, content: Upload!): File!",
        "scalar Cursor",
        "scalar Size",
        "scalar DateTime",
    ] {
        assert!(sdl.contains(needle), "schema lacks `{needle}`");
    }
}
