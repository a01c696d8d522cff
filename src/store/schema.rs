//! Versioned migrations, applied in order inside one transaction each; `PRAGMA user_version`
//! records the last one applied. Append new migrations; never edit a shipped one.

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: inbox of raw bodies, events taken out of them, messages, contacts, outbox, rule runs.
    r#"
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY,
    user        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,          -- unix ms
    sha256      TEXT    NOT NULL,          -- dedupe key of the raw body
    body        BLOB    NOT NULL,          -- exactly the bytes Meta signed
    UNIQUE (user, sha256)
);
CREATE TABLE events (
    id              INTEGER PRIMARY KEY,   -- arrival order
    user            TEXT    NOT NULL,
    inbox_id        INTEGER REFERENCES inbox(id),
    kind            TEXT    NOT NULL,
    dedupe_key      TEXT    NOT NULL,
    contact         TEXT,
    phone_number_id TEXT,
    payload         TEXT    NOT NULL,      -- the event map (JSON), raw included
    state           TEXT    NOT NULL,      -- pending | done | foreign
    error           TEXT,
    created_at      INTEGER NOT NULL,
    done_at         INTEGER,
    UNIQUE (user, dedupe_key)
);
CREATE INDEX events_by_state ON events (state, id);
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    user       TEXT    NOT NULL,
    wamid      TEXT,
    direction  TEXT    NOT NULL,           -- in | out
    contact    TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    text       TEXT    NOT NULL DEFAULT '',
    timestamp  INTEGER NOT NULL,           -- unix s: WhatsApp's (in) or send time (out)
    status     TEXT    NOT NULL,
    local_id   TEXT,
    raw        TEXT,
    UNIQUE (user, wamid)
);
CREATE TABLE contacts (
    user            TEXT NOT NULL,
    contact         TEXT NOT NULL,
    name            TEXT,
    last_inbound_at INTEGER,               -- unix s, WhatsApp's timestamp
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (user, contact)
);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    user            TEXT    NOT NULL,
    idem_key        TEXT    NOT NULL,      -- (event, rule, ordinal) or a CLI request id
    recipient       TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    body            TEXT    NOT NULL,      -- the Cloud API request (JSON)
    state           TEXT    NOT NULL,      -- queued | sending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,      -- unix ms
    wamid           TEXT,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (user, idem_key)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE rule_runs (
    id          INTEGER PRIMARY KEY,
    user        TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    event_id    INTEGER,
    outcome     TEXT    NOT NULL,          -- ok | skipped | error
    error       TEXT,
    logs        TEXT    NOT NULL,          -- JSON array of strings
    actions     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_us INTEGER NOT NULL
);
CREATE INDEX rule_runs_by_user ON rule_runs (user, id);
"#,
    // 2: a failed status keeps Meta's error details; when the status last moved.
    r#"
ALTER TABLE messages ADD COLUMN error TEXT;
ALTER TABLE messages ADD COLUMN status_at INTEGER;
"#,
    // 3: inbound media to fetch, and where it went.
    r#"
CREATE TABLE media (
    id              INTEGER PRIMARY KEY,
    user            TEXT    NOT NULL,
    media_id        TEXT    NOT NULL,
    wamid           TEXT,
    mime_type       TEXT,
    meta_sha256     TEXT,                  -- as the webhook gave it
    sha256          TEXT,                  -- hex sha256 of the downloaded bytes
    path            TEXT,                  -- relative to the media folder: <user>/<file>
    size            INTEGER,
    state           TEXT    NOT NULL,      -- pending | done | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,      -- unix ms
    error           TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (user, media_id)
);
CREATE INDEX media_due ON media (state, next_attempt_at);
"#,
    // 4: per-project state, scripts' scheduled calls, and fuller run traces.
    r#"
CREATE TABLE state (
    user       TEXT    NOT NULL,
    project    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,           -- JSON
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user, project, key)
);
CREATE TABLE schedules (
    id         INTEGER PRIMARY KEY,
    user       TEXT    NOT NULL,
    project    TEXT    NOT NULL,
    rule       TEXT    NOT NULL,           -- whose script holds `call`
    call       TEXT    NOT NULL,
    arg        TEXT    NOT NULL,           -- JSON
    due_at     INTEGER NOT NULL,           -- unix ms
    state      TEXT    NOT NULL,           -- pending | done | failed | cancelled
    idem_key   TEXT    NOT NULL,
    error      TEXT,
    created_at INTEGER NOT NULL,
    fired_at   INTEGER,
    UNIQUE (user, idem_key)
);
CREATE INDEX schedules_due ON schedules (state, due_at);
ALTER TABLE rule_runs ADD COLUMN version TEXT;   -- content hash of the project that ran
ALTER TABLE rule_runs ADD COLUMN trigger TEXT;   -- event kind, or schedule
ALTER TABLE rule_runs ADD COLUMN detail TEXT;    -- JSON: the run's actions
"#,
    // 5: every rule-set reload, with the content hash of what went live.
    r#"
CREATE TABLE reloads (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,             -- unix ms
    outcome  TEXT    NOT NULL,             -- live | rejected
    hash     TEXT    NOT NULL,             -- of every project that is live after it
    projects TEXT    NOT NULL,             -- JSON: {project: hash}
    error    TEXT
);
"#,
    // 6: the scheduler: each timed rule's next instant, and every firing (or skip) of one.
    r#"
CREATE TABLE timers (
    user     TEXT    NOT NULL,
    project  TEXT    NOT NULL,
    rule     TEXT    NOT NULL,
    trigger  TEXT    NOT NULL,             -- as written; a change recomputes next_at
    next_at  INTEGER,                      -- unix ms; NULL: nothing left to fire
    PRIMARY KEY (user, project, rule)
);
CREATE TABLE firings (
    id        INTEGER PRIMARY KEY,
    user      TEXT    NOT NULL,
    project   TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    instant   INTEGER NOT NULL,            -- the scheduled instant, unix ms
    state     TEXT    NOT NULL,            -- running | done | skipped
    reason    TEXT,
    fired_at  INTEGER NOT NULL,
    UNIQUE (user, project, rule, instant)
);
"#,
    // 7: tokens Graph rejected (code 190), by a fingerprint of the token, never the token.
    r#"
CREATE TABLE token_status (
    user        TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,          -- first 16 hex digits of sha256(token)
    reason      TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
"#,
    // 8: the audit log, hash-chained per user (see store/audit.rs), and what Graph said of each
    // token's expiry (debug_token).
    r#"
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    user    TEXT    NOT NULL,              -- `*` for gate-wide entries
    seq     INTEGER NOT NULL,              -- 1, 2, … per user
    at      INTEGER NOT NULL,              -- unix ms
    action  TEXT    NOT NULL,
    details TEXT    NOT NULL,              -- JSON, never a secret
    prev    TEXT    NOT NULL,              -- hash of the user's entry seq-1
    hash    TEXT    NOT NULL,
    UNIQUE (user, seq)
);
CREATE INDEX audit_by_time ON audit (at);
CREATE TABLE audit_head (
    user TEXT    PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
CREATE TABLE token_info (
    user        TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,          -- unix s; 0: never (a system user's token)
    checked_at  INTEGER NOT NULL           -- unix ms
);
"#,
    // 9: the contact book's labels, and the Groups API's groups (kept from group_* webhooks).
    r#"
CREATE TABLE contact_labels (
    user       TEXT    NOT NULL,
    contact    TEXT    NOT NULL,           -- as in contacts: wa_id digits or a business-scoped id
    label      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,           -- unix ms
    PRIMARY KEY (user, contact, label)
);
CREATE INDEX contact_labels_by_label ON contact_labels (user, label);
CREATE TABLE groups (
    id                 INTEGER PRIMARY KEY,
    user               TEXT    NOT NULL,
    group_id           TEXT,               -- NULL until the group_lifecycle_update webhook names it
    request_id         TEXT,               -- what POST /groups answered
    subject            TEXT,
    description        TEXT,
    join_approval_mode TEXT,
    invite_link        TEXT,
    state              TEXT    NOT NULL,   -- requested | active | failed | deleted
    error              TEXT,
    last_inbound_at    INTEGER,            -- unix s: last message a participant wrote in it
    created_at         INTEGER NOT NULL,   -- unix ms
    updated_at         INTEGER NOT NULL,
    UNIQUE (user, group_id),
    UNIQUE (user, request_id)
);
CREATE TABLE group_participants (
    user     TEXT    NOT NULL,
    group_id TEXT    NOT NULL,
    wa_id    TEXT    NOT NULL,
    added_at INTEGER NOT NULL,             -- unix ms
    PRIMARY KEY (user, group_id, wa_id)
);
"#,
    // 10: Substance Export: one change counter for messages, contacts and failed sends (a
    // status moves after the insert, a contact is renamed, a send fails: an incremental export
    // must see each), indexes for filtered exports, and each user's export watermark per scope
    // (all contacts, or one).
    r#"
CREATE TABLE change_seq (n INTEGER NOT NULL);
INSERT INTO change_seq (n) SELECT COALESCE(MAX(id), 0) FROM messages;
ALTER TABLE messages ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET rev = id;
ALTER TABLE contacts ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_rev ON messages (user, rev);
CREATE INDEX messages_by_time ON messages (user, timestamp, id);
CREATE INDEX messages_by_contact ON messages (user, contact, timestamp, id);
CREATE TRIGGER messages_rev_insert AFTER INSERT ON messages BEGIN
    UPDATE change_seq SET n = n + 1;
    UPDATE messages SET rev = (SELECT n FROM change_seq) WHERE id = NEW.id;
END;
CREATE TRIGGER messages_rev_update AFTER UPDATE OF status, error ON messages BEGIN
    UPDATE change_seq SET n = n + 1;
    UPDATE messages SET rev = (SELECT n FROM change_seq) WHERE id = NEW.id;
END;
CREATE TRIGGER contacts_rev_insert AFTER INSERT ON contacts BEGIN
    UPDATE change_seq SET n = n + 1;
    UPDATE contacts SET rev = (SELECT n FROM change_seq) WHERE user = NEW.user AND contact = NEW.contact;
END;
CREATE TRIGGER contacts_rev_update AFTER UPDATE OF name, last_inbound_at ON contacts BEGIN
    UPDATE change_seq SET n = n + 1;
    UPDATE contacts SET rev = (SELECT n FROM change_seq) WHERE user = NEW.user AND contact = NEW.contact;
END;
CREATE TRIGGER outbox_rev_failed AFTER UPDATE OF state ON outbox WHEN NEW.state = 'failed' BEGIN
    UPDATE change_seq SET n = n + 1;
    UPDATE outbox SET rev = (SELECT n FROM change_seq) WHERE id = NEW.id;
END;
CREATE TABLE export_marks (
    user  TEXT    NOT NULL,
    scope TEXT    NOT NULL,                -- `*`, or the one contact an export was limited to
    rev   INTEGER NOT NULL,                -- changes up to this change_seq were exported
    at    INTEGER NOT NULL,                -- unix ms of that export's snapshot
    path  TEXT,
    PRIMARY KEY (user, scope)
);
"#,
    // 11: every version of the configuration that went live: gate.yaml, users/*.yaml, and
    // each project folder's files.
    r#"
CREATE TABLE config_versions (
    id      INTEGER PRIMARY KEY,
    kind    TEXT    NOT NULL,              -- gate | user | project
    name    TEXT    NOT NULL,              -- gate.yaml, users/olga.yaml, or the project's path
    hash    TEXT    NOT NULL,              -- sha256 over the files (names and bytes)
    content TEXT    NOT NULL,              -- JSON: {path relative to the home: text}
    at      INTEGER NOT NULL               -- unix ms it went live
);
CREATE INDEX config_versions_by_name ON config_versions (kind, name, id);
"#,
    // 12: the writes of messages and contacts set their change number themselves (see
    // store::next_rev): the triggers wrote each row twice. The audit log's index by time is
    // dropped: its readers walk back from the newest entry (by id) and stop at the limit.
    r#"
DROP TRIGGER messages_rev_insert;
DROP TRIGGER messages_rev_update;
DROP TRIGGER contacts_rev_insert;
DROP TRIGGER contacts_rev_update;
DROP INDEX audit_by_time;
"#,
    // 13: the inbox without its unique index on (user, sha256): a redelivered body is known by
    // its events (each unique per user), and that index took a page at a random place of the
    // file at every webhook. Rebuilt as SQLite's ALTER TABLE instructions say (foreign keys are
    // off while migrations run).
    r#"
CREATE TABLE inbox_new (
    id          INTEGER PRIMARY KEY,
    user        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,          -- unix ms
    sha256      TEXT    NOT NULL,          -- of the raw body
    body        BLOB    NOT NULL           -- exactly the bytes Meta signed
);
INSERT INTO inbox_new (id, user, received_at, sha256, body)
    SELECT id, user, received_at, sha256, body FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_new RENAME TO inbox;
"#,
    // 14: outbound messages keyed by the contact's digits, as inbound ones are: a send to
    // "+33 6 12…" was stored under that text, apart from the contact's conversation and from
    // exports filtered by contact. Groups (group:…) and business-scoped ids (CC.…) keep theirs.
    r#"
UPDATE messages
SET contact = replace(replace(replace(replace(replace(replace(replace(contact,
    '+', ''), ' ', ''), '-', ''), '(', ''), ')', ''), '.', ''), '/', '')
WHERE direction = 'out' AND contact GLOB '*[^0-9]*' AND contact NOT LIKE 'group:%'
  AND NOT (contact GLOB '[A-Za-z]*' AND contact LIKE '%.%')
  AND replace(replace(replace(replace(replace(replace(replace(contact,
      '+', ''), ' ', ''), '-', ''), '(', ''), ')', ''), '.', ''), '/', '') GLOB '[0-9]*'
  AND NOT replace(replace(replace(replace(replace(replace(replace(contact,
      '+', ''), ' ', ''), '-', ''), '(', ''), ')', ''), '.', ''), '/', '') GLOB '*[^0-9]*';
"#,
];

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use crate::store::Store;
    use rusqlite::Connection;

    /// A database as the gate left it at migration `n`.
    fn at_version(path: &std::path::Path, n: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        for sql in &MIGRATIONS[..n] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", n as i64).unwrap();
        conn
    }

    #[test]
    fn outbound_messages_are_keyed_by_the_contacts_digits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = at_version(&path, 13);
        for (i, (dir, contact)) in [
            ("out", "+33 6 12-34.56 (78)"),
            ("out", "33612345678"),
            ("out", "group:ABC.1"),
            ("out", "US.13491208655302741918"),
            ("out", "+33 6 x"),
            ("in", "+44 7700"),
        ]
        .into_iter()
        .enumerate()
        {
            old.execute(
                "INSERT INTO messages (user, wamid, direction, contact, type, timestamp, status)
                 VALUES ('olga', ?1, ?2, ?3, 'text', 1, 'sent')",
                rusqlite::params![format!("w{i}"), dir, contact],
            )
            .unwrap();
        }
        drop(old);
        let store = Store::open(&path).unwrap();
        let contacts: Vec<String> = store
            .with(|c| {
                c.prepare("SELECT contact FROM messages ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .unwrap();
        assert_eq!(
            contacts,
            [
                "33612345678",
                "33612345678",
                "group:ABC.1",
                "US.13491208655302741918",
                "+33 6 x",
                "+44 7700"
            ]
        );
    }

    #[test]
    fn the_inbox_rebuilt_without_its_unique_index_keeps_every_body_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = at_version(&path, 12);
        old.execute_batch(
            "INSERT INTO inbox (id, user, received_at, sha256, body) VALUES (7, 'olga', 1, 'abc', x'7b7d');
             INSERT INTO events (user, inbox_id, kind, dedupe_key, payload, state, created_at)
                 VALUES ('olga', 7, 'message', 'wamid.A', '{}', 'done', 1);",
        )
        .unwrap();
        drop(old);
        let store = Store::open(&path).unwrap();
        let (version, body, refs, broken, uniques): (i64, Vec<u8>, i64, i64, i64) = store
            .with(|c| {
                Ok((
                    c.query_row("PRAGMA user_version", [], |r| r.get(0))?,
                    c.query_row("SELECT body FROM inbox WHERE id = 7 AND sha256 = 'abc'", [], |r| r.get(0))?,
                    c.query_row("SELECT COUNT(*) FROM events e JOIN inbox i ON i.id = e.inbox_id", [], |r| r.get(0))?,
                    c.prepare("PRAGMA foreign_key_check")?.query_map([], |_| Ok(()))?.count() as i64,
                    c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE tbl_name = 'inbox' AND type = 'index'", [], |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(body, b"{}");
        assert_eq!((refs, broken, uniques), (1, 0, 0));
        // Foreign keys are on again for the gate's own writes.
        let fk: i64 = store
            .with(|c| c.query_row("PRAGMA foreign_keys", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(fk, 1);
    }
}
