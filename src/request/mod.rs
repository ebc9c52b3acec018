//! The request path: the decision rule of `begin`, its answers and claims
//! (`Begin`, `Claim`), the lock table of live claims and waiters, and the
//! replay cache of completed records.

pub(crate) mod cache;
pub(crate) mod decide;
pub(crate) mod lock_table;
pub(crate) mod outcome;
