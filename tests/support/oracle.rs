//! The simulations' oracle: what a key may answer, from the answers that
//! were acknowledged. The embedded store's simulator (tests/sim.rs) and
//! the PostgreSQL backend's network simulation
//! (postgres/tests/network_sim.rs) check every answer against it.
//!
//! - Nothing acknowledged is lost: a completion that answered `Ok` replays
//!   byte for byte; a claim that answered `Claimed` is in progress until
//!   its lease ends.
//! - Never two live holders: a claim is granted only where no live claim
//!   or completion may be.
//! - Another payload on a stored key is a mismatch.
//! - Tokens only grow (over the whole store, or per key: the `Backend`
//!   contract's scope).
//! - Fencing: a stale claim's write is refused with `LeaseLost`, its
//!   holder's is not.
//! - A takeover hands over the last recovery point its holder recorded
//!   (the record keeps it until the new holder records its own); a fresh
//!   claim has none.
//! - An operation that failed may have landed or not: the key then answers
//!   as one of the two, which the next look settles.
//! - With a retention ([`Oracle::with_retention`]), a record reads as absent
//!   from its expiry on (a claim's: its lease's end plus the retention; a
//!   completion's: its time plus the retention) and as live again if the
//!   clock goes back before it, until a sweep may have deleted it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use idemkv::{Begin, Fingerprint, Record, RecordState, StoredResponse};

/// What the oracle knows of a key from acknowledged answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// No record: never claimed, released or removed.
    Absent,
    /// Claimed with `token` (0: unknown, a claim whose answer was lost) and
    /// payload `fp`, its lease ending at `lease_end` (ms), or as late as
    /// `lease_max` if a renewal that failed landed; its record holds one
    /// of `points`.
    InFlight {
        fp: u8,
        token: u64,
        lease_end: u64,
        lease_max: u64,
        points: Points,
    },
    /// Completed with `response` for payload `fp`, expiring at `expires`
    /// (ms).
    Completed {
        fp: u8,
        response: StoredResponse,
        expires: u64,
    },
    /// An operation on it failed: it answers as one of `options`.
    Either(Vec<Known>),
}

/// The recovery points (by phase) an in-flight record may hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Points {
    /// Any: a claim whose answer was lost may have taken one over.
    Any,
    /// One of these (`None`: no point).
    OneOf(Vec<Option<String>>),
}

impl Points {
    fn exactly(point: Option<&str>) -> Points {
        Points::OneOf(vec![point.map(str::to_owned)])
    }

    fn allows(&self, point: Option<&str>) -> bool {
        match self {
            Points::Any => true,
            Points::OneOf(points) => points.iter().any(|p| p.as_deref() == point),
        }
    }

    /// `point` may have been recorded as well (a write that failed).
    fn or(&mut self, point: Option<&str>) {
        if !self.allows(point)
            && let Points::OneOf(points) = self
        {
            points.push(point.map(str::to_owned));
        }
    }
}

/// Over what tokens must grow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenScope {
    /// Every token is larger than every earlier one (the embedded store).
    Store,
    /// Every token is larger than every earlier one of its key (what the
    /// `Backend` contract promises).
    Key,
}

type Outcome = Result<(), String>;

/// What a write answered, as the oracle tells answers apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Heard {
    /// It answered `Ok`.
    Done,
    /// It was refused with `LeaseLost`.
    LeaseLost,
    /// It failed transiently: it may have landed.
    Failed,
}

impl Heard {
    /// What a write's error (`None`: it answered `Ok`) says; an error no
    /// write may answer comes back as the message of a failed run.
    pub fn of(error: Option<&idemkv::Error>) -> Result<Heard, String> {
        match error {
            None => Ok(Heard::Done),
            Some(idemkv::Error::LeaseLost) => Ok(Heard::LeaseLost),
            Some(err) if err.is_transient() => Ok(Heard::Failed),
            Some(err) => Err(err.to_string()),
        }
    }
}

/// The oracle of keys `0..keys`.
pub struct Oracle {
    known: BTreeMap<u64, Known>,
    /// The largest token seen, per key (`TokenScope::Key`) or under key 0
    /// for all (`TokenScope::Store`).
    highest: BTreeMap<u64, u64>,
    scope: TokenScope,
    /// The store's retention (ms); `None`: records never expire.
    retention: Option<u64>,
    /// The store's time (ms), as the simulation moves it.
    pub now: u64,
}

impl Oracle {
    pub fn new(keys: u64, scope: TokenScope, now: u64) -> Oracle {
        Oracle {
            known: (0..keys).map(|k| (k, Known::Absent)).collect(),
            highest: BTreeMap::new(),
            scope,
            retention: None,
            now,
        }
    }

    /// Records expire `retention_ms` after a claim's lease or a
    /// completion.
    pub fn with_retention(mut self, retention_ms: u64) -> Oracle {
        self.retention = Some(retention_ms);
        self
    }

    /// What the oracle knows of `k`.
    pub fn known(&self, k: u64) -> Known {
        self.known[&k].clone()
    }

    /// `k` is now `known`, acknowledged.
    fn set(&mut self, k: u64, known: Known) {
        self.known.insert(k, known);
    }

    /// A `begin` of `k` with `payload` answered `Claimed` with `token`,
    /// a takeover or not, inheriting the recovery point `recovered` (its
    /// phase): the token must grow and the oracle allow that claim; `k` is
    /// then held for `lease_ms`.
    pub fn granted(
        &mut self,
        k: u64,
        payload: u8,
        token: u64,
        takeover: bool,
        recovered: Option<&str>,
        lease_ms: u64,
    ) -> Outcome {
        self.check_token(k, token)?;
        self.expect_claimable(k, payload, takeover, recovered)?;
        self.claimed(k, payload, token, lease_ms, recovered);
        Ok(())
    }

    /// A `begin` of `k` with `payload` failed: a claim whose answer was
    /// lost (its token unknown) may have landed.
    pub fn begin_failed(&mut self, k: u64, payload: u8, lease_ms: u64) {
        let lease_end = self.now + lease_ms;
        self.maybe(
            k,
            Known::InFlight {
                fp: payload,
                token: 0,
                lease_end,
                lease_max: lease_end,
                points: Points::Any,
            },
        );
    }

    /// The claim of `k` with `token` and `payload` completed with
    /// `response`, and heard `heard`.
    pub fn completion(
        &mut self,
        k: u64,
        token: u64,
        payload: u8,
        response: StoredResponse,
        heard: Heard,
    ) -> Outcome {
        let completed = Known::Completed {
            fp: payload,
            response,
            expires: self.now.saturating_add(self.retention.unwrap_or(u64::MAX)),
        };
        match heard {
            Heard::Done => {
                self.fenced("complete", k, token, true)?;
                self.set(k, completed);
            }
            Heard::LeaseLost => self.fenced("complete", k, token, false)?,
            Heard::Failed => {
                if self.holds(k, token) != Some(false) {
                    self.maybe(k, completed);
                }
            }
        }
        Ok(())
    }

    /// The claim of `k` with `token` released, and heard `heard`.
    pub fn release(&mut self, k: u64, token: u64, heard: Heard) -> Outcome {
        match heard {
            Heard::Done => {
                // A release of a key with no record answers `Ok`: the key
                // is free, as asked (a release whose answer was lost).
                if !self.may_be_absent(k) {
                    self.fenced("release", k, token, true)?;
                }
                self.set(k, Known::Absent);
            }
            Heard::LeaseLost => self.fenced("release", k, token, false)?,
            // A release deletes its own claim's record even once the
            // record expired (seed 4,320), so whether a failed one may have
            // landed is judged on the record, live or not (seed 87,605: a
            // release of an expired claim failed after its frame was
            // synced, the replay applied it, and the restart's clock,
            // stepped back, would have brought the record back to life).
            Heard::Failed => {
                if self.may_hold_record(k, token) {
                    self.maybe(k, Known::Absent);
                }
            }
        }
        Ok(())
    }

    /// The claim of `k` with `token` renewed its lease for `lease_ms`
    /// (with `point`: recorded that recovery point, which renews the lease
    /// the same way), and heard `heard`.
    pub fn renewal(
        &mut self,
        k: u64,
        token: u64,
        lease_ms: u64,
        point: Option<&str>,
        heard: Heard,
    ) -> Outcome {
        let what = if point.is_some() {
            "record_progress"
        } else {
            "renew"
        };
        let lease_end = self.now + lease_ms;
        match heard {
            Heard::Done => {
                self.fenced(what, k, token, true)?;
                self.change_claim(k, token, |end, max, points| {
                    *end = lease_end;
                    *max = lease_end;
                    if point.is_some() {
                        *points = Points::exactly(point);
                    }
                });
            }
            Heard::LeaseLost => self.fenced(what, k, token, false)?,
            // Landed or not: the lease ends at the old time or a lease
            // from now, and the record holds the old point or the new one.
            Heard::Failed => self.change_claim(k, token, |_, max, points| {
                *max = (*max).max(lease_end);
                if point.is_some() {
                    points.or(point);
                }
            }),
        }
        Ok(())
    }

    /// A removal of `k` heard `heard` (`LeaseLost` is not an answer of
    /// one).
    pub fn removal(&mut self, k: u64, heard: Heard) -> Outcome {
        match heard {
            Heard::Done => self.set(k, Known::Absent),
            Heard::Failed => self.maybe(k, Known::Absent),
            Heard::LeaseLost => return Err(format!("remove k{k} answered LeaseLost")),
        }
        Ok(())
    }

    /// A sweep ran (answered or not): every record that may have expired
    /// may be gone, even if the clock later goes back before its expiry.
    pub fn swept(&mut self) {
        let keys: Vec<u64> = self.known.keys().copied().collect();
        for k in keys {
            let options = flat(&self.known[&k]);
            let may_expire = options
                .iter()
                .any(|o| *o != Known::Absent && self.views(o).contains(&Known::Absent));
            if may_expire && !options.contains(&Known::Absent) {
                self.maybe(k, Known::Absent);
            }
        }
    }

    /// What `known` may read as now: a record while it lives, absent once
    /// it expired, either while a renewal that failed leaves its expiry
    /// open; an `Either` gives each option's.
    fn views(&self, known: &Known) -> Vec<Known> {
        let Some(retention) = self.retention else {
            return flat(known);
        };
        let mut views = Vec::new();
        for option in flat(known) {
            let (live, expired) = match &option {
                Known::InFlight {
                    lease_end,
                    lease_max,
                    ..
                } => (
                    self.now < lease_end.saturating_add(retention),
                    self.now >= lease_max.saturating_add(retention),
                ),
                Known::Completed { expires, .. } => (self.now < *expires, self.now >= *expires),
                _ => (true, false),
            };
            if !live && !views.contains(&Known::Absent) {
                views.push(Known::Absent);
            }
            if !expired && !views.contains(&option) {
                views.push(option);
            }
        }
        views
    }

    /// Whether `k` may have no live record.
    pub fn may_be_absent(&self, k: u64) -> bool {
        self.views(&self.known[&k]).contains(&Known::Absent)
    }

    /// `k` was claimed with `token` and `payload`, its lease `lease_ms`,
    /// its record holding the recovery point `recovered` inherited.
    fn claimed(&mut self, k: u64, payload: u8, token: u64, lease_ms: u64, recovered: Option<&str>) {
        let lease_end = self.now + lease_ms;
        self.set(
            k,
            Known::InFlight {
                fp: payload,
                token,
                lease_end,
                lease_max: lease_end,
                points: Points::exactly(recovered),
            },
        );
    }

    /// Applies `change` (to the lease's end, its latest end and the
    /// points) of every in-flight option of `k` that may be the claim with
    /// `token`.
    fn change_claim(
        &mut self,
        k: u64,
        token: u64,
        change: impl Fn(&mut u64, &mut u64, &mut Points),
    ) {
        fn visit(known: &mut Known, token: u64, change: &impl Fn(&mut u64, &mut u64, &mut Points)) {
            match known {
                Known::InFlight {
                    token: t,
                    lease_end,
                    lease_max,
                    points,
                    ..
                } if *t == token || *t == 0 => change(lease_end, lease_max, points),
                Known::Either(options) => {
                    for option in options {
                        visit(option, token, change);
                    }
                }
                _ => {}
            }
        }
        if let Some(known) = self.known.get_mut(&k) {
            visit(known, token, &change);
        }
    }

    /// An operation on `k` failed: it may have landed as `landed`.
    fn maybe(&mut self, k: u64, landed: Known) {
        let before = self.known(k);
        let mut options = match before {
            Known::Either(options) => options,
            other => vec![other],
        };
        options.push(landed);
        self.set(k, Known::Either(options));
    }

    /// Whether the claim with `token` holds `k`, as far as the oracle
    /// knows: `Some(true)`, `Some(false)`, or `None` when a failed
    /// operation leaves it open.
    fn holds(&self, k: u64, token: u64) -> Option<bool> {
        let answers: Vec<_> = self
            .views(&self.known[&k])
            .iter()
            .map(|view| match view {
                Known::InFlight { token: t, .. } if *t == 0 => None,
                Known::InFlight { token: t, .. } => Some(*t == token),
                _ => Some(false),
            })
            .collect();
        if answers.iter().all(|a| *a == Some(true)) {
            Some(true)
        } else if answers.iter().all(|a| *a == Some(false)) {
            Some(false)
        } else {
            None
        }
    }

    /// Whether `k`'s record, expired or not, may be the claim with `token`.
    fn may_hold_record(&self, k: u64, token: u64) -> bool {
        flat(&self.known[&k]).iter().any(
            |option| matches!(option, Known::InFlight { token: t, .. } if *t == token || *t == 0),
        )
    }

    /// Checks a holder's write against the fencing: accepted only if the
    /// claim may hold the key, refused with `LeaseLost` only if it may not.
    fn fenced(&self, what: &str, k: u64, token: u64, accepted: bool) -> Outcome {
        match (self.holds(k, token), accepted) {
            (Some(false), true) => Err(format!(
                "{what} k{k} by the stale claim with token {token} was accepted: the fencing let it through"
            )),
            (Some(true), false) => Err(format!(
                "{what} k{k} by its holder (token {token}) was refused with LeaseLost"
            )),
            _ => Ok(()),
        }
    }

    /// A token was issued for `k`: it must be larger than every earlier one
    /// in its scope.
    fn check_token(&mut self, k: u64, token: u64) -> Outcome {
        let slot = match self.scope {
            TokenScope::Store => 0,
            TokenScope::Key => k,
        };
        let highest = self.highest.entry(slot).or_default();
        if token <= *highest {
            return Err(format!(
                "token {token} of k{k} after token {highest}: tokens must grow"
            ));
        }
        *highest = token;
        Ok(())
    }

    /// A claim of `k` with `payload` was granted (a takeover or not,
    /// inheriting `recovered`): the oracle must allow one, a takeover only
    /// of a record that may hold `recovered`, a fresh claim only of a key
    /// that may be free, with no point.
    fn expect_claimable(
        &self,
        k: u64,
        payload: u8,
        takeover: bool,
        recovered: Option<&str>,
    ) -> Outcome {
        let known = &self.known[&k];
        let ok = match self.views(known).as_slice() {
            [Known::Absent] => true,
            [Known::InFlight { fp, lease_end, .. }] => *fp == payload && self.now >= *lease_end,
            [Known::Completed { .. }] => false,
            options => options
                .iter()
                .any(|o| matches!(o, Known::Absent | Known::InFlight { .. })),
        };
        if !ok {
            return Err(format!(
                "k{k} was claimed (takeover: {takeover}) while the oracle knows it as {known:?}: two live holders, or an acknowledged completion lost"
            ));
        }
        let inherits = self.views(known).iter().any(|view| match view {
            Known::Absent => !takeover && recovered.is_none(),
            Known::InFlight { points, .. } => takeover && points.allows(recovered),
            _ => false,
        });
        if !inherits {
            return Err(format!(
                "k{k} was claimed (takeover: {takeover}, recovering {recovered:?}) while the oracle knows it as {known:?}: a takeover hands over the last recovery point recorded, a fresh claim none"
            ));
        }
        Ok(())
    }

    /// A `begin` on `k` with `payload` answered without a claim: the oracle
    /// must allow the answer.
    pub fn check_answer<C>(&self, k: u64, payload: u8, answer: &Begin<C>) -> Outcome {
        let known = &self.known[&k];
        let views = self.views(known);
        if !views.iter().any(|view| self.allows(payload, view, answer)) {
            return Err(format!(
                "k{k} payload {payload} answered {} while the oracle knows it as {known:?}",
                kind(answer)
            ));
        }
        Ok(())
    }

    /// Whether a key that reads as `view` (one of [`Oracle::views`]) may
    /// answer `answer` to a `begin` with `payload`.
    fn allows<C>(&self, payload: u8, view: &Known, answer: &Begin<C>) -> bool {
        match (view, answer) {
            (Known::Completed { fp, response, .. }, Begin::Replay(got)) => {
                *fp == payload && got == response
            }
            (Known::Completed { fp, .. }, Begin::Mismatch) => *fp != payload,
            (Known::InFlight { fp, lease_max, .. }, Begin::InProgress { .. }) => {
                *fp == payload && self.now < *lease_max
            }
            (Known::InFlight { fp, .. }, Begin::Mismatch) => *fp != payload,
            _ => false,
        }
    }

    /// `k` was read and holds `found`: it must be one of what the oracle
    /// allows, and is that from now on (an in-flight record keeps its lease
    /// from the oracle). `when` names the look in an error.
    pub fn settle(&mut self, k: u64, found: Known, when: &str) -> Outcome {
        let known = self.known(k);
        if !self
            .views(&known)
            .iter()
            .any(|view| same_kind(view, &found))
        {
            return Err(format!(
                "{when} k{k} holds {found:?}, the oracle knows it as {known:?} (now {})",
                self.now
            ));
        }
        let settled = match found {
            Known::InFlight {
                fp, token, points, ..
            } => {
                let (lease_end, lease_max) = lease_of(&known, token).ok_or_else(|| {
                    format!("k{k}: an in-flight record the oracle did not expect")
                })?;
                Known::InFlight {
                    fp,
                    token,
                    lease_end,
                    lease_max,
                    points,
                }
            }
            // Absent, or expired: a record that expired reads as absent,
            // and as live again if the clock goes back before its expiry.
            Known::Absent => {
                let mut options = vec![Known::Absent];
                options.extend(
                    flat(&known)
                        .into_iter()
                        .filter(|o| *o != Known::Absent && self.views(o).contains(&Known::Absent)),
                );
                if options.len() == 1 {
                    Known::Absent
                } else {
                    Known::Either(options)
                }
            }
            other => other,
        };
        self.set(k, settled);
        Ok(())
    }
}

/// What a read of a key found, as the oracle names it; `fp0` is payload
/// 0's fingerprint (any other is payload 1).
pub fn found(record: Option<&Record>, fp0: Fingerprint) -> Result<Known, String> {
    let Some(record) = record else {
        return Ok(Known::Absent);
    };
    let fp = u8::from(record.fingerprint() != fp0);
    match record.state() {
        RecordState::InFlight { recovery, .. } => Ok(Known::InFlight {
            fp,
            token: record.token(),
            lease_end: 0,
            lease_max: 0,
            points: Points::exactly(recovery.as_ref().map(|point| point.phase())),
        }),
        RecordState::Completed { response, .. } => Ok(Known::Completed {
            fp,
            response: response.clone(),
            expires: record
                .expires_at()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
        }),
        _ => Err("a record state the simulation does not know".into()),
    }
}

/// The options of `known`: itself, or an `Either`'s, flattened.
fn flat(known: &Known) -> Vec<Known> {
    match known {
        Known::Either(options) => options.iter().flat_map(flat).collect(),
        other => vec![other.clone()],
    }
}

/// Whether `found` is one of what `known` allows, comparing responses
/// byte for byte and recovery points by phase, ignoring leases and expiry.
fn same_kind(known: &Known, found: &Known) -> bool {
    match (known, found) {
        (Known::Absent, Known::Absent) => true,
        (
            Known::InFlight {
                fp: a,
                token: t,
                points,
                ..
            },
            Known::InFlight {
                fp: b,
                token: u,
                points: Points::OneOf(found),
                ..
            },
        ) => a == b && (*t == 0 || t == u) && found.iter().all(|p| points.allows(p.as_deref())),
        (
            Known::Completed {
                fp: a, response: r, ..
            },
            Known::Completed {
                fp: b, response: s, ..
            },
        ) => a == b && r == s,
        (Known::Either(options), found) => options.iter().any(|o| same_kind(o, found)),
        _ => false,
    }
}

/// The lease bounds the oracle knows for the in-flight record with `token`
/// (a claim whose answer was lost has token 0 here: any token). When
/// several options may be that record (claims whose answers were lost),
/// its lease ends no sooner than the earliest end and no later than the
/// latest.
fn lease_of(known: &Known, token: u64) -> Option<(u64, u64)> {
    flat(known)
        .iter()
        .filter_map(|option| match option {
            Known::InFlight {
                token: t,
                lease_end,
                lease_max,
                ..
            } if *t == token || *t == 0 => Some((*lease_end, *lease_max)),
            _ => None,
        })
        .reduce(|(end, max), (e, m)| (end.min(e), max.max(m)))
}

/// A `begin`'s answer without its claim, for a message.
fn kind<C>(answer: &Begin<C>) -> String {
    match answer {
        Begin::Claimed(_) => "Claimed".into(),
        Begin::Replay(r) => format!("Replay({:?})", String::from_utf8_lossy(r.body())),
        Begin::InProgress { .. } => "InProgress".into(),
        Begin::Mismatch => "Mismatch".into(),
    }
}
