//! The PostgreSQL schema, one step per entry (the version is kept in
//! `spillway_schema`). Its first step is SQLite's first four at once, so the
//! step numbers of the two lists differ; steps are never edited, only
//! appended. Keys collate as "C" (bytewise), the order of the API and of
//! SQLite's BINARY collation.

pub const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        key          TEXT COLLATE "C" PRIMARY KEY,
        name         TEXT NOT NULL,
        size         BIGINT NOT NULL,
        blake3       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        description  TEXT,
        tags         TEXT NOT NULL DEFAULT '[]',
        version      TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE intents (
        key          TEXT COLLATE "C" PRIMARY KEY,
        action       TEXT NOT NULL,
        version      TEXT NOT NULL DEFAULT '',
        size         BIGINT NOT NULL DEFAULT 0,
        blake3       TEXT NOT NULL DEFAULT '',
        content_type TEXT NOT NULL DEFAULT '',
        name         TEXT,
        description  TEXT
    );
    CREATE TABLE uploads (
        id          TEXT PRIMARY KEY,
        length      BIGINT,
        metadata    TEXT,
        key         TEXT,
        concat      TEXT NOT NULL DEFAULT 'none',
        created_at  TEXT NOT NULL,
        expires_at  BIGINT NOT NULL,
        completed   BOOLEAN NOT NULL DEFAULT FALSE,
        node        TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE multiparts (id TEXT PRIMARY KEY, path TEXT NOT NULL, node TEXT NOT NULL);
"#,
    // As SQLite's fifth migration.
    r#"
    ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"#,
    // As SQLite's sixth.
    r#"
    CREATE INDEX uploads_open ON uploads (completed, owner);
"#,
    // As SQLite's seventh.
    r#"
    CREATE TABLE grants (name TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at BIGINT NOT NULL);
    INSERT INTO grants (name, value, expires_at)
        SELECT name, value, CAST(extract(epoch FROM now()) AS BIGINT) + 8 * 86400
        FROM settings WHERE name LIKE 'direct-upload:%';
    DELETE FROM settings WHERE name LIKE 'direct-upload:%';
"#,
    // As SQLite's eighth.
    r#"
    CREATE TABLE versions (
        key          TEXT NOT NULL COLLATE "C",
        number       BIGINT NOT NULL,
        blake3       TEXT NOT NULL,
        size         BIGINT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        replaced_at  BIGINT,
        uploaded_by  TEXT,
        PRIMARY KEY (key, number)
    );
    CREATE INDEX versions_blob ON versions (blake3, size);
    CREATE INDEX versions_replaced ON versions (replaced_at);
    CREATE TABLE blobs (
        blake3   TEXT NOT NULL,
        size     BIGINT NOT NULL,
        version  TEXT NOT NULL,
        corrupt  BOOLEAN NOT NULL DEFAULT FALSE,
        doomed   BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (blake3, size)
    );
    CREATE INDEX blobs_doomed ON blobs (doomed) WHERE doomed = TRUE;
    ALTER TABLE datasets ADD COLUMN number BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE intents ADD COLUMN uploaded_by TEXT;
    ALTER TABLE intents ADD COLUMN purge BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    // As SQLite's ninth: totals kept by triggers.
    r#"
    CREATE TABLE totals (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        version_bytes BIGINT NOT NULL,
        stored_bytes  BIGINT NOT NULL
    );
    INSERT INTO totals VALUES (1,
        (SELECT coalesce(sum(size), 0) FROM versions),
        (SELECT coalesce(sum(size), 0) FROM blobs WHERE NOT doomed));
    CREATE FUNCTION totals_versions() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE totals SET version_bytes = version_bytes + NEW.size;
        ELSE
            UPDATE totals SET version_bytes = version_bytes - OLD.size;
        END IF;
        RETURN NULL;
    END $f$;
    CREATE FUNCTION totals_blobs() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP IN ('INSERT', 'UPDATE') AND NOT NEW.doomed THEN
            UPDATE totals SET stored_bytes = stored_bytes + NEW.size;
        END IF;
        IF TG_OP IN ('DELETE', 'UPDATE') AND NOT OLD.doomed THEN
            UPDATE totals SET stored_bytes = stored_bytes - OLD.size;
        END IF;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER totals_versions AFTER INSERT OR DELETE ON versions
        FOR EACH ROW EXECUTE FUNCTION totals_versions();
    CREATE TRIGGER totals_blobs AFTER INSERT OR DELETE OR UPDATE OF doomed ON blobs
        FOR EACH ROW EXECUTE FUNCTION totals_blobs();
"#,
    // As SQLite's tenth.
    r#"
    ALTER TABLE uploads ADD COLUMN stored_offset BIGINT;
    ALTER TABLE uploads ADD COLUMN part_size BIGINT;
    ALTER TABLE uploads ADD COLUMN multipart TEXT;
    ALTER TABLE uploads ADD COLUMN tail TEXT;
    ALTER TABLE uploads ADD COLUMN lease TEXT;
    ALTER TABLE uploads ADD COLUMN lease_until BIGINT;
    ALTER TABLE uploads ADD COLUMN lease_wanted BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE upload_parts (
        upload TEXT NOT NULL,
        number BIGINT NOT NULL,
        etag   TEXT NOT NULL,
        cv     TEXT NOT NULL,
        PRIMARY KEY (upload, number)
    );
"#,
    // As SQLite's eleventh.
    r#"
    CREATE TABLE version_numbers (key TEXT PRIMARY KEY NOT NULL, last BIGINT NOT NULL);
    INSERT INTO version_numbers (key, last) SELECT key, max(number) FROM versions GROUP BY key;
"#,
];
