//! A table made by schema version 1 (before recovery points) is upgraded in
//! place by `connect`: its rows stay readable, an in-flight row can be taken
//! over (with no recovery point), and the new columns take recovery points.

mod support;

use bytes::Bytes;
use idemkv::{Backend, Begin, Fingerprint, Key, RecordState, StoredResponse, Terms};
use idemkv_conformance::{BoxError, Skipped};
use idemkv_postgres::SCHEMA_VERSION;

/// The table exactly as schema version 1 created it, with one completed
/// and one in-flight row (whose lease has run out), as a version 1 replica
/// left them.
fn version_1(schema: &str) -> String {
    format!(
        "CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".idemkv_schema_version (
             table_name text PRIMARY KEY, version integer NOT NULL);
         INSERT INTO \"{schema}\".idemkv_schema_version VALUES ('idemkv_records', 1);
         CREATE TABLE \"{schema}\".\"idemkv_records\" (
             scope text NOT NULL, idem_key text NOT NULL, fingerprint bytea NOT NULL,
             token bigint NOT NULL, in_flight boolean NOT NULL, takeover boolean NOT NULL,
             created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
             expires_at timestamptz NOT NULL, lease_until timestamptz, status integer,
             header_names text[], header_values bytea[], body bytea,
             PRIMARY KEY (scope, idem_key));
         CREATE INDEX \"idemkv_records_expires_at\" ON \"{schema}\".\"idemkv_records\" (expires_at);
         CREATE SEQUENCE \"{schema}\".\"idemkv_records_token\" START 100;
         CREATE OR REPLACE FUNCTION \"{schema}\".\"idemkv_records_now\"() RETURNS timestamptz
             LANGUAGE sql STABLE AS 'SELECT now()';
         INSERT INTO \"{schema}\".\"idemkv_records\" VALUES
             ('v1', 'done', $fp$\\x{fp}$fp$, 7, false, false, now(), now(),
              now() + interval '1 hour', NULL, 201, ARRAY['content-type'],
              ARRAY['\\x746578742f706c61696e'::bytea], '\\x6f6c64'),
             ('v1', 'flying', $fp$\\x{fp}$fp$, 8, true, false, now() - interval '2 minutes',
              now() - interval '2 minutes', now() + interval '1 hour',
              now() - interval '1 minute', NULL, NULL, NULL, NULL);",
        fp = hex(Fingerprint::of(b"payload").as_bytes()),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_version_1_table_is_upgraded_and_keeps_its_rows() -> Result<(), BoxError> {
    let client = match support::connect().await {
        Ok(client) => client,
        Err(err) if err.downcast_ref::<Skipped>().is_some() => {
            eprintln!("skipped: {err}");
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let schema = support::fresh_schema();
    let _drop = DropSchema(schema.clone());
    client.batch_execute(&version_1(&schema)).await?;

    let backend = support::backend(&schema, 2).await?;
    let version: i32 = client
        .query_one(
            &format!("SELECT version FROM \"{schema}\".idemkv_schema_version"),
            &[],
        )
        .await?
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 3);

    let fp = Fingerprint::of(b"payload");
    let done = Key::new("v1", "done")?;
    let Begin::Replay(response) = backend.begin(&done, fp, Terms::default()).await? else {
        return Err("the version 1 completion does not replay".into());
    };
    assert_eq!(
        response,
        StoredResponse::new(201, "old").with_header("content-type", "text/plain")
    );

    let flying = Key::new("v1", "flying")?;
    let record = backend
        .get(&flying)
        .await?
        .ok_or("the in-flight row is gone")?;
    assert!(matches!(
        record.state(),
        RecordState::InFlight { recovery: None, .. }
    ));
    let Begin::Claimed(claim) = backend.begin(&flying, fp, Terms::default()).await? else {
        return Err("the version 1 claim past its lease was not taken over".into());
    };
    assert!(claim.is_takeover());
    assert!(claim.token() > 8);
    assert_eq!(claim.recovered(), None);
    backend
        .record_progress(&claim, "charge_created", Bytes::from_static(b"ch_1"))
        .await?;
    let record = backend.get(&flying).await?.ok_or("the claim is gone")?;
    assert_eq!(
        record.recovery_point().map(|p| (p.phase(), p.state())),
        Some(("charge_created", &b"ch_1"[..]))
    );
    backend
        .complete(claim, StoredResponse::new(200, "new"))
        .await?;

    // Migrating again is a no-op.
    backend.migrate().await?;
    Ok(())
}

struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        support::drop_schema(&self.0);
    }
}
