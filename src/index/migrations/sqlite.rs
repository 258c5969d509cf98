//! The SQLite schema, one step per entry; a database at `user_version` N
//! runs the steps after the Nth. Steps are never edited, only appended.

pub const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        key          TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        blake3       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        description  TEXT,
        tags         TEXT NOT NULL DEFAULT '[]',
        inode        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE intents (
        key          TEXT PRIMARY KEY NOT NULL,
        action       TEXT NOT NULL,
        inode        INTEGER NOT NULL DEFAULT 0,
        size         INTEGER NOT NULL DEFAULT 0,
        blake3       TEXT NOT NULL DEFAULT '',
        content_type TEXT NOT NULL DEFAULT '',
        name         TEXT,
        description  TEXT
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE uploads (
        id          TEXT PRIMARY KEY NOT NULL,
        length      INTEGER,
        metadata    TEXT,
        key         TEXT,
        concat      TEXT NOT NULL DEFAULT 'none',
        created_at  TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        completed   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
"#,
    // The store's version of a dataset's bytes: a file's inode, or an
    // object's ETag, instead of an inode only.
    r#"
    ALTER TABLE datasets ADD COLUMN version TEXT NOT NULL DEFAULT '';
    UPDATE datasets SET version = CAST(inode AS TEXT);
    ALTER TABLE datasets DROP COLUMN inode;
    ALTER TABLE intents ADD COLUMN version TEXT NOT NULL DEFAULT '';
    UPDATE intents SET version = CAST(inode AS TEXT);
    ALTER TABLE intents DROP COLUMN inode;
    ALTER TABLE uploads ADD COLUMN node TEXT NOT NULL DEFAULT '';
    CREATE TABLE settings (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE multiparts (id TEXT PRIMARY KEY NOT NULL, path TEXT NOT NULL, node TEXT NOT NULL) WITHOUT ROWID;
"#,
    // Who created a resumable upload: a token's name ('' on an open node,
    // and for uploads from before owners were kept).
    r#"
    ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"#,
    // Open uploads are counted at each creation, in total and per owner.
    r#"
    CREATE INDEX uploads_open ON uploads (completed, owner);
"#,
    // Grants leave `settings` for a table where each expires. Those kept
    // get the longest a URL may live (7 days) and the day of grace.
    r#"
    CREATE TABLE grants (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO grants (name, value, expires_at)
        SELECT name, value, CAST(strftime('%s', 'now') AS INTEGER) + 8 * 86400
        FROM settings WHERE name LIKE 'direct-upload:%';
    DELETE FROM settings WHERE name LIKE 'direct-upload:%';
"#,
    // Versions: every commit to a key is a row here, numbered per key;
    // identical bytes are one blob, referred to by blake3 and size. A blob
    // no version refers to is `doomed` in the transaction that freed it,
    // and its row goes once its bytes are gone.
    r#"
    CREATE TABLE versions (
        key          TEXT NOT NULL,
        number       INTEGER NOT NULL,
        blake3       TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        replaced_at  INTEGER,
        uploaded_by  TEXT,
        PRIMARY KEY (key, number)
    ) WITHOUT ROWID;
    CREATE INDEX versions_blob ON versions (blake3, size);
    CREATE INDEX versions_replaced ON versions (replaced_at);
    CREATE TABLE blobs (
        blake3   TEXT NOT NULL,
        size     INTEGER NOT NULL,
        version  TEXT NOT NULL,
        corrupt  INTEGER NOT NULL DEFAULT 0,
        doomed   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (blake3, size)
    ) WITHOUT ROWID;
    CREATE INDEX blobs_doomed ON blobs (doomed) WHERE doomed = TRUE;
    ALTER TABLE datasets ADD COLUMN number INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE intents ADD COLUMN uploaded_by TEXT;
    ALTER TABLE intents ADD COLUMN purge INTEGER NOT NULL DEFAULT 0;
"#,
    // Logical and physical bytes, kept by triggers in the transactions that
    // change versions and blobs, so /metrics reads one row instead of
    // summing every version at each scrape.
    r#"
    CREATE TABLE totals (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        version_bytes INTEGER NOT NULL,
        stored_bytes  INTEGER NOT NULL
    );
    INSERT INTO totals VALUES (1,
        (SELECT coalesce(sum(size), 0) FROM versions),
        (SELECT coalesce(sum(size), 0) FROM blobs WHERE doomed = FALSE));
    CREATE TRIGGER totals_version_in AFTER INSERT ON versions
        BEGIN UPDATE totals SET version_bytes = version_bytes + NEW.size; END;
    CREATE TRIGGER totals_version_out AFTER DELETE ON versions
        BEGIN UPDATE totals SET version_bytes = version_bytes - OLD.size; END;
    CREATE TRIGGER totals_blob_in AFTER INSERT ON blobs WHEN NEW.doomed = FALSE
        BEGIN UPDATE totals SET stored_bytes = stored_bytes + NEW.size; END;
    CREATE TRIGGER totals_blob_out AFTER DELETE ON blobs WHEN OLD.doomed = FALSE
        BEGIN UPDATE totals SET stored_bytes = stored_bytes - OLD.size; END;
    CREATE TRIGGER totals_blob_doomed AFTER UPDATE OF doomed ON blobs WHEN OLD.doomed <> NEW.doomed
        BEGIN UPDATE totals SET stored_bytes = stored_bytes + CASE WHEN NEW.doomed THEN -NEW.size ELSE NEW.size END; END;
"#,
    // Resumable uploads kept in an object store as they arrive: the offset
    // durable there, the part size, the multipart upload and the object
    // holding the bytes after the last whole part; each part's ETag and
    // blake3 chaining value; and the lease of the one request writing it.
    r#"
    ALTER TABLE uploads ADD COLUMN stored_offset INTEGER;
    ALTER TABLE uploads ADD COLUMN part_size INTEGER;
    ALTER TABLE uploads ADD COLUMN multipart TEXT;
    ALTER TABLE uploads ADD COLUMN tail TEXT;
    ALTER TABLE uploads ADD COLUMN lease TEXT;
    ALTER TABLE uploads ADD COLUMN lease_until INTEGER;
    ALTER TABLE uploads ADD COLUMN lease_wanted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE upload_parts (
        upload TEXT NOT NULL,
        number INTEGER NOT NULL,
        etag   TEXT NOT NULL,
        cv     TEXT NOT NULL,
        PRIMARY KEY (upload, number)
    ) WITHOUT ROWID;
"#,
    // The highest version number each key ever had, kept when its versions
    // go: numbers are never reused (a URL signed for one must not come to
    // mean other bytes).
    r#"
    CREATE TABLE version_numbers (key TEXT PRIMARY KEY NOT NULL, last INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO version_numbers (key, last) SELECT key, max(number) FROM versions GROUP BY key;
"#,
];
