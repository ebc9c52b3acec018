//! `Store::once`, the blocking form: one run per key, and each error policy.
//! (The async form, for every backend, is in the conformance suite.)

mod common;

use common::*;
use idemkv::{OnError, Once, Store, StoredResponse};

#[test]
fn the_blocking_form_runs_once_and_follows_each_policy() -> TestResult {
    let (config, _clock) = manual_config();
    let store = Store::in_memory(config)?;
    let mut runs = 0;
    let mut deliver = |name: &str, policy: OnError, fail: bool| {
        store.once(&key(name), fp("a"), policy, |_claim| {
            runs += 1;
            if fail {
                Err("broker said no")
            } else {
                Ok(StoredResponse::new(200, "ok"))
            }
        })
    };
    assert!(matches!(
        deliver("ok", OnError::default(), false)?,
        Once::Ran(_)
    ));
    assert!(matches!(
        deliver("ok", OnError::default(), false)?,
        Once::Replayed(_)
    ));

    let kept = deliver("kept", OnError::KeepInFlight, true)?;
    assert!(matches!(kept, Once::Failed("broker said no")));
    assert!(!kept.is_settled(OnError::KeepInFlight));
    assert!(matches!(
        deliver("kept", OnError::KeepInFlight, false)?,
        Once::InProgress { .. }
    ));

    assert!(matches!(
        deliver("released", OnError::Release, true)?,
        Once::Failed(_)
    ));
    assert!(matches!(
        deliver("released", OnError::Release, false)?,
        Once::Ran(_)
    ));

    let policy = OnError::Store { status: 500 };
    assert!(matches!(deliver("stored", policy, true)?, Once::Failed(_)));
    let Once::Replayed(stored) = deliver("stored", policy, false)? else {
        return Err("the failure was not stored".into());
    };
    assert_eq!(
        (stored.status(), stored.body()),
        (500, &b"broker said no"[..])
    );
    assert_eq!(
        runs, 5,
        "ok once, kept once, released twice, stored once, and nothing more"
    );
    Ok(())
}
