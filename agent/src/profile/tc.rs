//! `timer:tc`: how long a closure or a future takes.

use std::future::Future;
use std::time::Duration;

use crate::record::clock;

/// Runs `f` and returns how long it took with its result, like
/// `:timer.tc/1`. Two raw clock reads; nothing else is paid.
///
/// ```
/// let (took, sum) = nodetrace_agent::tc(|| (1..=10u64).sum::<u64>());
/// assert_eq!(sum, 55);
/// assert!(took < std::time::Duration::from_secs(1));
/// ```
#[inline]
pub fn tc<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = clock::now();
    let value = f();
    let end = clock::now();
    (
        Duration::from_nanos(clock::nanos_between(start, end)),
        value,
    )
}

/// Awaits `fut` and returns how long it took (wall time) with its output.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let (took, v) = nodetrace_agent::tc_async(async { 7 }).await;
/// assert_eq!(v, 7);
/// assert!(took < std::time::Duration::from_secs(1));
/// # });
/// ```
pub async fn tc_async<F: Future>(fut: F) -> (Duration, F::Output) {
    let start = clock::now();
    let value = fut.await;
    let end = clock::now();
    (
        Duration::from_nanos(clock::nanos_between(start, end)),
        value,
    )
}
