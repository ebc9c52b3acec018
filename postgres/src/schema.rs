//! The schema: the records table, its token sequence, its clock function and
//! its expiry index, created by [`migrate`] with a version table, and the
//! statements that use them.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use idemkv::{Error, Result};

use crate::backend::db_error;
use crate::config::PgConfig;

/// The schema version this build creates and understands.
///
/// - 1: the first table.
/// - 2: `phase` and `phase_state` columns, an in-flight row's recovery
///   point. A version 1 table gains them (empty) when a version 2 build
///   migrates it; its rows stay valid.
/// - 3: triggers that `NOTIFY` when an in-flight row is completed, released
///   or removed, so that waiters on other replicas wake at once (push
///   wake-ups). Rows are unchanged.
pub const SCHEMA_VERSION: i32 = 3;

/// Qualified, quoted names of one configured table.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub schema: String,
    /// `"schema"."table"`.
    pub table: String,
    /// The table name alone, for the version row.
    pub table_name: String,
    /// `"schema"."table_token"`: fencing tokens.
    pub sequence: String,
    /// `"schema"."table_now"()`: the time every statement reads. It returns
    /// the database's `now()`; tests replace it with a clock they move.
    pub now: String,
    pub index: String,
    /// `"schema"."idemkv_schema_version"`.
    pub versions: String,
    /// `"schema"."table_wake"()`: the trigger function that notifies.
    pub wake_function: String,
    /// `"schema"."table_waiting"`: the keys some waiting `begin` waits on.
    pub waiting: String,
    /// `table_wake_completed`, `table_wake_deleted`: its triggers.
    pub wake_triggers: [String; 2],
    /// The `NOTIFY` channel, `idemkv_<table>` (at most 55 bytes, within
    /// PostgreSQL's 63). Tables of the same name in two schemas share it;
    /// every payload starts with [`Names::wake_prefix`], which tells them
    /// apart.
    pub channel: String,
    /// `schema.table `: how this table's wake-up payloads start.
    pub wake_prefix: String,
}

impl Names {
    pub fn of(config: &PgConfig) -> Names {
        let (schema, table) = (&config.schema, &config.table);
        Names {
            schema: format!("\"{schema}\""),
            table: format!("\"{schema}\".\"{table}\""),
            table_name: table.clone(),
            sequence: format!("\"{schema}\".\"{table}_token\""),
            now: format!("\"{schema}\".\"{table}_now\"()"),
            index: format!("\"{table}_expires_at\""),
            versions: format!("\"{schema}\".\"idemkv_schema_version\""),
            wake_function: format!("\"{schema}\".\"{table}_wake\"()"),
            waiting: format!("\"{schema}\".\"{table}_waiting\""),
            wake_triggers: [
                format!("\"{table}_wake_completed\""),
                format!("\"{table}_wake_deleted\""),
            ],
            channel: format!("idemkv_{table}"),
            wake_prefix: format!("{schema}.{table} "),
        }
    }
}

/// Creates what is missing, once, under an advisory lock so that replicas
/// starting together do not race; refuses a table of a newer version.
pub(crate) async fn migrate(client: &mut Client, names: &Names) -> Result<()> {
    let txn = client.transaction().await.map_err(db_error)?;
    txn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('idemkv schema ' || $1))",
        &[&names.table],
    )
    .await
    .map_err(db_error)?;
    txn.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {versions} (
             table_name text PRIMARY KEY,
             version integer NOT NULL
         );",
        schema = names.schema,
        versions = names.versions,
    ))
    .await
    .map_err(db_error)?;
    let found: Option<i32> = txn
        .query_opt(
            &format!(
                "SELECT version FROM {} WHERE table_name = $1",
                names.versions
            ),
            &[&names.table_name],
        )
        .await
        .map_err(db_error)?
        .map(|row| row.get(0));
    match found {
        Some(version) if version > SCHEMA_VERSION => {
            return Err(Error::InvalidConfig(format!(
                "table {} has schema version {version}, this build knows {SCHEMA_VERSION}: \
                 upgrade idemkv-postgres",
                names.table
            )));
        }
        Some(SCHEMA_VERSION) => {}
        Some(older) => {
            if older < 2 {
                txn.batch_execute(&upgrade_to_v2(names))
                    .await
                    .map_err(db_error)?;
            }
            if older < 3 {
                txn.batch_execute(&upgrade_to_v3(names))
                    .await
                    .map_err(db_error)?;
            }
            txn.execute(
                &format!(
                    "UPDATE {} SET version = $2 WHERE table_name = $1",
                    names.versions
                ),
                &[&names.table_name, &SCHEMA_VERSION],
            )
            .await
            .map_err(db_error)?;
        }
        None => {
            txn.batch_execute(&create_v1(names))
                .await
                .map_err(db_error)?;
            txn.batch_execute(&upgrade_to_v2(names))
                .await
                .map_err(db_error)?;
            txn.batch_execute(&upgrade_to_v3(names))
                .await
                .map_err(db_error)?;
            txn.execute(
                &format!(
                    "INSERT INTO {} (table_name, version) VALUES ($1, $2)",
                    names.versions
                ),
                &[&names.table_name, &SCHEMA_VERSION],
            )
            .await
            .map_err(db_error)?;
        }
    }
    txn.commit().await.map_err(db_error)
}

/// Version 1: the table, its primary key (claim and lookup), its expiry
/// index (sweep), its token sequence and its clock.
fn create_v1(names: &Names) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             scope text NOT NULL,
             idem_key text NOT NULL,
             fingerprint bytea NOT NULL,
             token bigint NOT NULL,
             in_flight boolean NOT NULL,
             takeover boolean NOT NULL,
             created_at timestamptz NOT NULL,
             updated_at timestamptz NOT NULL,
             expires_at timestamptz NOT NULL,
             lease_until timestamptz,
             status integer,
             header_names text[],
             header_values bytea[],
             body bytea,
             PRIMARY KEY (scope, idem_key)
         );
         CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
         CREATE SEQUENCE IF NOT EXISTS {sequence};
         CREATE OR REPLACE FUNCTION {now} RETURNS timestamptz
             LANGUAGE sql STABLE AS 'SELECT now()';",
        table = names.table,
        index = names.index,
        sequence = names.sequence,
        now = names.now,
    )
}

/// Version 2: an in-flight row's recovery point (phase name and state).
fn upgrade_to_v2(names: &Names) -> String {
    format!(
        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS phase text,
                             ADD COLUMN IF NOT EXISTS phase_state bytea;",
        table = names.table,
    )
}

/// Version 3: push wake-ups. A waiting `begin` that finds a key in flight
/// records the key in the `_waiting` table. When an in-flight row stops
/// being in flight (a completion) or is deleted (a release, a removal), a
/// trigger deletes the key's `_waiting` row and, only if there was one,
/// notifies the table's channel on commit with `"schema.table <scope
/// length>:<scope><key>"`; every replica listens and wakes its waiters on
/// that key. A completion nobody waits for notifies nothing: `NOTIFY`
/// serializes the commits of the transactions that send it, so sending it
/// on every completion would cap throughput. Renewals and takeovers keep
/// the row in flight and notify nothing.
fn upgrade_to_v3(names: &Names) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {waiting} (
             scope text NOT NULL,
             idem_key text NOT NULL,
             since timestamptz NOT NULL,
             PRIMARY KEY (scope, idem_key)
         );
         CREATE OR REPLACE FUNCTION {function} RETURNS trigger LANGUAGE plpgsql AS $wake$
         BEGIN
             DELETE FROM {waiting} WHERE scope = OLD.scope AND idem_key = OLD.idem_key;
             IF FOUND THEN
                 PERFORM pg_notify('{channel}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME || ' '
                     || length(OLD.scope)::text || ':' || OLD.scope || OLD.idem_key);
             END IF;
             RETURN NULL;
         END
         $wake$;
         DROP TRIGGER IF EXISTS {completed} ON {table};
         CREATE TRIGGER {completed} AFTER UPDATE ON {table} FOR EACH ROW
             WHEN (OLD.in_flight AND NOT NEW.in_flight) EXECUTE FUNCTION {function};
         DROP TRIGGER IF EXISTS {deleted} ON {table};
         CREATE TRIGGER {deleted} AFTER DELETE ON {table} FOR EACH ROW
             WHEN (OLD.in_flight) EXECUTE FUNCTION {function};",
        waiting = names.waiting,
        function = names.wake_function,
        channel = names.channel,
        table = names.table,
        completed = names.wake_triggers[0],
        deleted = names.wake_triggers[1],
    )
}

/// One statement: its SQL, with this table's names in it, and the types
/// of its parameters (declared rather than inferred, so that a statement
/// can also run unnamed, parsed in the same round trip as its execution).
#[derive(Debug)]
pub(crate) struct Stmt {
    pub sql: String,
    pub types: &'static [Type],
}

/// The parameter types the statements share.
const KEY: &[Type] = &[Type::TEXT, Type::TEXT];
const HOLDER: &[Type] = &[Type::TEXT, Type::TEXT, Type::INT8];
/// A holder's key, token, lease and retention in milliseconds.
const HOLDER_TERMS: &[Type] = &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::INT8];

/// The statements, with this table's names in them.
#[derive(Debug)]
pub(crate) struct Statements {
    /// The live record of a key and what `begin` needs to answer from it.
    pub look: Stmt,
    /// Claims a key that is free, expired, or in flight past its lease with
    /// the same fingerprint; no row when another attempt holds it.
    pub claim: Stmt,
    pub complete: Stmt,
    pub release: Stmt,
    pub renew: Stmt,
    /// `renew` that also records a recovery point.
    pub record_progress: Stmt,
    pub get: Stmt,
    pub remove: Stmt,
    pub sweep: Stmt,
    /// Records that a waiting `begin` waits on a key (push wake-ups).
    pub wait_for: Stmt,
    /// Forgets `_waiting` rows older than an hour (waiters that timed out
    /// on a key nobody finished).
    pub sweep_waiting: Stmt,
}

impl Statements {
    pub fn of(names: &Names) -> Statements {
        let (t, now, seq) = (&names.table, &names.now, &names.sequence);
        let ms = "* interval '1 millisecond'";
        Statements {
            look: Stmt {
                sql: format!(
                "SELECT fingerprint, in_flight,
                        ceil(EXTRACT(EPOCH FROM (lease_until - c.n)) * 1000)::bigint,
                        status, header_names, header_values, body
                 FROM {t}, (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2 AND expires_at > c.n"
                ),
                types: KEY,
            },
            claim: Stmt {
                sql: format!(
                "WITH c AS (SELECT {now} AS n)
                 INSERT INTO {t} AS r (scope, idem_key, fingerprint, token, in_flight, takeover,
                                       created_at, updated_at, expires_at, lease_until)
                 SELECT $1, $2, $3, nextval('{seq_text}'), true, false, c.n, c.n,
                        c.n + ($4::bigint + $5::bigint) {ms}, c.n + $4::bigint {ms}
                 FROM c
                 ON CONFLICT (scope, idem_key) DO UPDATE SET
                     fingerprint = EXCLUDED.fingerprint,
                     token = EXCLUDED.token,
                     in_flight = true,
                     takeover = r.in_flight AND r.expires_at > EXCLUDED.updated_at,
                     created_at = CASE WHEN r.in_flight AND r.expires_at > EXCLUDED.updated_at
                                       THEN r.created_at ELSE EXCLUDED.created_at END,
                     updated_at = EXCLUDED.updated_at,
                     expires_at = EXCLUDED.expires_at,
                     lease_until = EXCLUDED.lease_until,
                     status = NULL, header_names = NULL, header_values = NULL, body = NULL,
                     phase = CASE WHEN r.in_flight AND r.expires_at > EXCLUDED.updated_at
                                  THEN r.phase END,
                     phase_state = CASE WHEN r.in_flight AND r.expires_at > EXCLUDED.updated_at
                                        THEN r.phase_state END
                 WHERE r.expires_at <= EXCLUDED.updated_at
                    OR (r.in_flight AND r.lease_until <= EXCLUDED.updated_at
                        AND r.fingerprint = EXCLUDED.fingerprint)
                 RETURNING token, takeover, phase, phase_state",
                seq_text = seq.replace('\'', "''"),
                ),
                types: &[Type::TEXT, Type::TEXT, Type::BYTEA, Type::INT8, Type::INT8],
            },
            // Also matches the same completion by the same holder that
            // landed before (a retry after a lost answer), and leaves it as
            // it was: completing is idempotent by token.
            complete: Stmt {
                sql: format!(
                "UPDATE {t} SET in_flight = false, takeover = false, lease_until = NULL,
                        phase = NULL, phase_state = NULL, status = $4, header_names = $5, header_values = $6, body = $7,
                        updated_at = CASE WHEN in_flight THEN c.n ELSE updated_at END,
                        expires_at = CASE WHEN in_flight THEN c.n + $8::bigint {ms} ELSE expires_at END
                 FROM (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2 AND token = $3 AND expires_at > c.n
                   AND (in_flight OR (status = $4 AND header_names = $5
                                      AND header_values = $6 AND body = $7))"
                ),
                types: &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT4, Type::TEXT_ARRAY, Type::BYTEA_ARRAY, Type::BYTEA, Type::INT8],
            },
            // Deletes the holder's row, expired or not (an expired row
            // reads as absent only while the clock stays past its expiry);
            // also answers whether any live row is left for the key (read
            // from the statement's snapshot, so the row it deletes counts),
            // so that a release repeated after one that landed is told the
            // key is already free.
            release: Stmt {
                sql: format!(
                "WITH c AS (SELECT {now} AS n),
                      released AS (
                        DELETE FROM {t}
                         WHERE scope = $1 AND idem_key = $2 AND token = $3 AND in_flight
                        RETURNING 1)
                 SELECT (SELECT count(*) FROM released) AS released,
                        EXISTS (SELECT 1 FROM {t}, c
                                 WHERE scope = $1 AND idem_key = $2 AND expires_at > c.n) AS live"
                ),
                types: HOLDER,
            },
            renew: Stmt {
                sql: format!(
                "UPDATE {t} SET lease_until = c.n + $4::bigint {ms},
                        expires_at = c.n + ($4::bigint + $5::bigint) {ms},
                        updated_at = c.n
                 FROM (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2 AND token = $3 AND in_flight
                   AND expires_at > c.n"
                ),
                types: HOLDER_TERMS,
            },
            record_progress: Stmt {
                sql: format!(
                "UPDATE {t} SET lease_until = c.n + $4::bigint {ms},
                        expires_at = c.n + ($4::bigint + $5::bigint) {ms},
                        updated_at = c.n, phase = $6, phase_state = $7
                 FROM (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2 AND token = $3 AND in_flight
                   AND expires_at > c.n"
                ),
                types: &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::BYTEA],
            },
            get: Stmt {
                sql: format!(
                "SELECT fingerprint, token, in_flight, created_at, updated_at, expires_at,
                        lease_until, status, header_names, header_values, body,
                        phase, phase_state
                 FROM {t}, (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2 AND expires_at > c.n"
                ),
                types: KEY,
            },
            remove: Stmt {
                sql: format!(
                "DELETE FROM {t} USING (SELECT {now} AS n) c
                 WHERE scope = $1 AND idem_key = $2
                 RETURNING expires_at > c.n"
                ),
                types: KEY,
            },
            // The clock function is called in the conditions (not joined
            // from a subquery) so that the planner compares expires_at with
            // a stable value and uses the expiry index.
            sweep: Stmt {
                sql: format!(
                "WITH doomed AS (SELECT ctid FROM {t} WHERE expires_at <= {now}
                                 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                 DELETE FROM {t}
                 WHERE ctid IN (SELECT ctid FROM doomed) AND expires_at <= {now}"
                ),
                types: &[Type::INT8],
            },
            // Takes a share lock on the key's record first, so that it
            // and a completion or release of the record are serialized: a
            // completion whose trigger ran before this row existed has
            // committed by the time this statement does (the waiter's look
            // after it sees the completion), and one that comes later finds
            // this row and notifies. Without the lock, a completion could
            // miss the row while the waiter's look missed the uncommitted
            // completion, and the waiter slept until its next poll. A key
            // with no record records nothing (the look after it claims).
            wait_for: Stmt {
                sql: format!(
                "INSERT INTO {waiting} (scope, idem_key, since)
                 SELECT scope, idem_key, {now} FROM {t}
                  WHERE scope = $1 AND idem_key = $2 FOR SHARE
                 ON CONFLICT (scope, idem_key) DO UPDATE SET since = EXCLUDED.since",
                waiting = names.waiting,
                ),
                types: KEY,
            },
            sweep_waiting: Stmt {
                sql: format!(
                "DELETE FROM {waiting} WHERE since < {now} - interval '1 hour'",
                waiting = names.waiting,
                ),
                types: &[],
            },
        }
    }
}
