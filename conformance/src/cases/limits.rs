//! The response size limit: inclusive, counted over body and headers, and a
//! refusal that writes nothing and hands the claim back.

use idemkv::{Backend, Error, StoredResponse};

use super::{begin, fp, key};
use crate::expect::{claimed, in_progress, replayed};
use crate::{Harness, Outcome, Setup, Subject};

/// One byte over the limit is refused with `ResponseTooLarge` (naming the
/// setting), nothing is stored, and the claim comes back whole, still
/// holding the key, to complete with a response that fits.
///
/// Contract: error kinds, answers that need no write never write.
pub async fn oversized_responses_are_refused_and_hand_the_claim_back<H: Harness>(
    harness: &H,
) -> Outcome {
    let setup = Setup {
        max_response_bytes: 100,
        ..Setup::default()
    };
    let subject = harness.open(setup).await?;
    let b = subject.backend();
    assert_eq!(b.max_response_bytes(), 100);
    let k = key("big");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    let before = b.get(&k).await?;
    let big = StoredResponse::new(200, vec![b'x'; 101]);
    let Err(err) = b.complete(claim, big).await else {
        return Err("an oversized response was stored".into());
    };
    assert!(
        matches!(
            err.error(),
            Error::ResponseTooLarge {
                size: 101,
                limit: 100
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("max_response_bytes"), "{err}");
    assert_eq!(b.get(&k).await?, before, "still in flight, nothing stored");
    assert_eq!(b.metrics().completions, 0);
    let claim = err.into_claim().ok_or("the claim was not handed back")?;
    in_progress(begin(b, &k, fp("a")).await?);
    let exact = StoredResponse::new(200, vec![b'x'; 90]).with_header("abcde", "12345");
    assert_eq!(exact.stored_len(), 100);
    b.complete(claim, exact.clone()).await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?), exact);
    Ok(())
}

/// A response exactly at the limit is stored.
///
/// Contract: the answers' semantics.
pub async fn the_limit_is_inclusive_and_completes<H: Harness>(harness: &H) -> Outcome {
    let setup = Setup {
        max_response_bytes: 10,
        ..Setup::default()
    };
    let subject = harness.open(setup).await?;
    let b = subject.backend();
    let k = key("fits");
    let claim = claimed(begin(b, &k, fp("a")).await?);
    b.complete(claim, StoredResponse::new(200, vec![7u8; 10]))
        .await?;
    assert_eq!(replayed(begin(b, &k, fp("a")).await?).body(), &[7u8; 10]);
    Ok(())
}
