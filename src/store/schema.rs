//! The schema, as numbered migrations applied in order at start. Written in the SQL that SQLite
//! and MySQL/MariaDB share, so both backends hold the same tables; where a backend needs its
//! own statements (SQLite's `messages` has no key, see [`SQLITE_ONLY`]), they are beside.

/// The newest schema version this binary knows.
pub(crate) const VERSION: i64 = 3;

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
];

/// Statements only SQLite runs, after migration `i`'s shared ones (the same length as
/// [`MIGRATIONS`]).
///
/// 3: SQLite's `messages` table has no primary key. Keeping one meant an index insert per
/// message, which measured as most of what recording every message cost (a server answered
/// 0.8x as fast with it, as fast as without recording without it). A key is not needed for
/// correctness there: a batch is one transaction, so a retried batch never lands twice. MySQL
/// keeps its key, which makes a replayed spool land once and is its table's clustering order.
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
];

/// The columns of a `bench_runs` row, in the order [`super::BenchRow`] is read and written.
pub(crate) const BENCH_COLUMNS: &str = "run, lab, started, address, model, frame, conns, size, depth, rate, secs, \
    msgs_per_s, mb_per_s, p50_us, p90_us, p99_us, p999_us, max_us, errors, mismatches, cpu_us_per_msg, rss_bytes_per_conn";
