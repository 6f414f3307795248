//! The schema, as numbered migrations applied in order at start. Written in the SQL that SQLite
//! and MySQL/MariaDB share, so both backends hold the same tables; where a backend needs its
//! own statements (SQLite's `messages` has no key, see [`SQLITE_ONLY`]), they are beside.

/// The newest schema version this binary knows.
pub(crate) const VERSION: i64 = 5;

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&[&str]] = &[
    // 1: the first tables.
    &[
        "CREATE TABLE servers (
        instance VARCHAR(128) NOT NULL PRIMARY KEY,
        host VARCHAR(255) NOT NULL,
        pid BIGINT NOT NULL,
        model VARCHAR(32) NOT NULL,
        address VARCHAR(1024) NOT NULL,
        service VARCHAR(64) NOT NULL,
        frame VARCHAR(16) NOT NULL,
        started BIGINT NOT NULL,
        stopped BIGINT NULL,
        written BIGINT NULL,
        spooled BIGINT NULL,
        waited BIGINT NULL,
        dropped BIGINT NULL)",
        "CREATE TABLE sessions (
        instance VARCHAR(128) NOT NULL,
        id BIGINT NOT NULL,
        peer VARCHAR(1024) NOT NULL,
        transport VARCHAR(16) NOT NULL,
        opened BIGINT NOT NULL,
        closed BIGINT NOT NULL,
        bytes_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        msgs_in BIGINT NOT NULL,
        msgs_out BIGINT NOT NULL,
        reason VARCHAR(16) NOT NULL,
        PRIMARY KEY (instance, id))",
        "CREATE TABLE messages (
        instance VARCHAR(128) NOT NULL,
        session BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        request LONGBLOB NOT NULL,
        reply LONGBLOB NOT NULL,
        PRIMARY KEY (instance, session, seq))",
        "CREATE TABLE bench_runs (
        run VARCHAR(64) NOT NULL PRIMARY KEY,
        started BIGINT NOT NULL,
        address VARCHAR(1024) NOT NULL,
        model VARCHAR(32) NULL,
        conns BIGINT NOT NULL,
        size BIGINT NOT NULL,
        depth BIGINT NOT NULL,
        secs DOUBLE NOT NULL,
        msgs_per_s DOUBLE NOT NULL,
        p50_us BIGINT NOT NULL,
        p99_us BIGINT NOT NULL,
        p999_us BIGINT NOT NULL,
        errors BIGINT NOT NULL)",
    ],
    // 2: what `bench` and `lab` report beyond the first columns.
    &[
        "ALTER TABLE bench_runs ADD COLUMN lab VARCHAR(64) NULL",
        "ALTER TABLE bench_runs ADD COLUMN frame VARCHAR(16) NULL",
        "ALTER TABLE bench_runs ADD COLUMN rate DOUBLE NULL",
        "ALTER TABLE bench_runs ADD COLUMN mb_per_s DOUBLE NULL",
        "ALTER TABLE bench_runs ADD COLUMN p90_us BIGINT NULL",
        "ALTER TABLE bench_runs ADD COLUMN max_us BIGINT NULL",
        "ALTER TABLE bench_runs ADD COLUMN mismatches BIGINT NULL",
        "ALTER TABLE bench_runs ADD COLUMN cpu_us_per_msg DOUBLE NULL",
        "ALTER TABLE bench_runs ADD COLUMN rss_bytes_per_conn DOUBLE NULL",
    ],
    // 3: SQLite's `messages` loses its key (below); MySQL keeps it.
    &[],
    // 4: SQLite's `messages` gains a row id and an index by time (below); MySQL has its key.
    &[],
    // 5: where the newest sessions are. `sessions --last N` sorted the whole table by
    // `closed`, and a datagram server records a session per datagram (1.5 million rows in
    // 20 s of `bench udp://...`: a second a read). An index on `closed` would cost every session an
    // index insert (a quarter more of the writer's work per datagram on SQLite, a third more
    // of MariaDB's); instead each transaction of the writer adds a row here per run of close
    // ids (`super::session_spans`), and `sessions` walks them newest first, reading each
    // span's rows through the key (see `super::Store::sessions`).
    // MySQL cannot roll a migration back (its DDL commits), so one cut short (a killed
    // process, a lost connection) must run again cleanly: the table only if missing, emptied
    // of a partial fill, and the index last.
    &[
        "CREATE TABLE IF NOT EXISTS session_spans (
        instance VARCHAR(128) NOT NULL,
        first_id BIGINT NOT NULL,
        last_id BIGINT NOT NULL,
        first_closed BIGINT NOT NULL,
        last_closed BIGINT NOT NULL)",
        "DELETE FROM session_spans",
        // Sessions recorded before: spans of each instance's ids by the thousand.
        "INSERT INTO session_spans (instance, first_id, last_id, first_closed, last_closed)
        SELECT instance, MIN(id), MAX(id), MIN(closed), MAX(closed) FROM sessions
        GROUP BY instance, id - id % 1024",
        "CREATE INDEX session_spans_by_time ON session_spans (last_closed)",
    ],
];

/// Statements only SQLite runs, after migration `i`'s shared ones (the same length as
/// [`MIGRATIONS`]).
///
/// 3: SQLite's `messages` table has no primary key. Keeping one meant an index insert per
/// message, which measured as most of what recording every message cost (a server answered
/// 0.8x as fast with it, as fast as without recording without it). A key is not needed for
/// correctness there: a batch is one transaction, so a retried batch never lands twice. MySQL
/// keeps its key, which makes a replayed spool land once and is its table's clustering order.
///
/// 4: without a key, reading the newest messages meant reading the whole table (a second per
/// three million rows). Each message now has a row id (`id INTEGER PRIMARY KEY`: the table's
/// own order, in which rows are appended, so it costs no index; declared, so that `VACUUM`
/// keeps it), and each transaction of the writer adds one row to `message_spans`: the
/// instance, the ids its messages took, and the oldest and newest time among them. Reading
/// walks the spans newest first through their index and reads each span's rows by id (see
/// [`super::Sqlite::recorded_messages`]); one small row per transaction, not an index entry
/// per message.
pub(crate) const SQLITE_ONLY: &[&[&str]] = &[
    &[],
    &[],
    &[
        "CREATE TABLE messages_unkeyed (
            instance VARCHAR(128) NOT NULL,
            session BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            at BIGINT NOT NULL,
            request LONGBLOB NOT NULL,
            reply LONGBLOB NOT NULL)",
        "INSERT INTO messages_unkeyed SELECT instance, session, seq, at, request, reply FROM messages",
        "DROP TABLE messages",
        "ALTER TABLE messages_unkeyed RENAME TO messages",
    ],
    &[
        "CREATE TABLE messages_numbered (
            id INTEGER PRIMARY KEY,
            instance VARCHAR(128) NOT NULL,
            session BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            at BIGINT NOT NULL,
            request LONGBLOB NOT NULL,
            reply LONGBLOB NOT NULL)",
        "INSERT INTO messages_numbered (instance, session, seq, at, request, reply)
            SELECT instance, session, seq, at, request, reply FROM messages ORDER BY rowid",
        "DROP TABLE messages",
        "ALTER TABLE messages_numbered RENAME TO messages",
        "CREATE TABLE message_spans (
            instance VARCHAR(128) NOT NULL,
            first_id BIGINT NOT NULL,
            last_id BIGINT NOT NULL,
            first_at BIGINT NOT NULL,
            last_at BIGINT NOT NULL)",
        "CREATE INDEX message_spans_by_time ON message_spans (last_at)",
        "CREATE INDEX message_spans_by_instance ON message_spans (instance, last_at)",
        // Rows recorded before: spans of each instance's rows by thousands of ids, the last
        // rows' span last (reading checks that the last span reaches the last row).
        "INSERT INTO message_spans (instance, first_id, last_id, first_at, last_at)
            SELECT instance, MIN(id), MAX(id), MIN(at), MAX(at) FROM messages
            GROUP BY instance, id / 4096 ORDER BY MAX(id)",
    ],
    &[],
];

/// The columns of a `bench_runs` row, in the order [`super::BenchRow`] is read and written.
pub(crate) const BENCH_COLUMNS: &str = "run, lab, started, address, model, frame, conns, size, depth, rate, secs, \
    msgs_per_s, mb_per_s, p50_us, p90_us, p99_us, p999_us, max_us, errors, mismatches, cpu_us_per_msg, rss_bytes_per_conn";
