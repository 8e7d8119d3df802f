//! Under a scoped subscriber (`with_default`, as tests and some apps use),
//! a log line still carries the spans it happened in: the bridge reads the
//! registry of the subscriber it was added to, not `get_default` (which
//! finds none from inside that subscriber's own callbacks).

use std::time::Duration;

use nodetrace_agent::{EventKind, Session, SessionOptions, tracing_layer};
use nodetrace_protocol::{Level, Pattern};
use tracing_subscriber::prelude::*;

#[tracing::instrument]
fn outer(n: u32) {
    inner(n);
}

#[tracing::instrument]
fn inner(n: u32) {
    tracing::info!(n, "inside");
}

#[test]
fn a_log_line_names_its_spans_under_a_scoped_subscriber() {
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(tracing_layer());
    tracing::subscriber::with_default(subscriber, || {
        let session = Session::start(SessionOptions::default()).unwrap();
        let this: Pattern = module_path!().parse().unwrap();
        session.trace_log(Some(&this), Level::Info);
        outer(5);
        let log = session
            .recv_timeout(Duration::from_secs(5))
            .expect("a log event");
        assert_eq!(log.kind, EventKind::Log);
        assert_eq!(log.text.as_deref(), Some("inside n=5"));
        assert_eq!(log.extra.as_deref(), Some("outer{n=5}:inner{n=5}:"));
    });
}
