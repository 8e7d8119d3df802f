//! The panic message of an unwinding traced function.
//!
//! A traced function learns it is unwinding in its guard's `Drop`, where the
//! panic payload is out of reach. A panic hook, installed once when the first
//! session starts and chained to the previous hook, keeps the message of the
//! thread's latest panic for that `Drop` to take.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_owned());
            let text = match info.location() {
                Some(at) => format!("panicked at {at}: {message}"),
                None => format!("panicked: {message}"),
            };
            let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(text));
            previous(info);
        }));
    });
}

/// The message of this thread's latest panic; every traced frame it unwinds
/// through reports it.
pub(crate) fn message() -> String {
    LAST_PANIC
        .try_with(|p| p.borrow().clone())
        .ok()
        .flatten()
        .unwrap_or_else(|| "panicked".to_owned())
}
