//! What the agent's tests share: reading a session's events, and
//! speaking the protocol to a node ([`wire`]).

pub mod wire;

use nodetrace_agent::{Event, EventKind, Session, callsite};

/// Every event delivered so far, after the collector caught up.
#[allow(dead_code)]
pub fn drain(session: &Session) -> Vec<Event> {
    session.flush();
    session.take_events()
}

/// The id of the traced function named `name` (its callsite's).
#[allow(dead_code)]
pub fn id(name: &str) -> u32 {
    nodetrace_agent::callsites()
        .iter()
        .find(|c| c.metadata().name == name)
        .unwrap_or_else(|| panic!("no function {name}"))
        .id()
}

/// An event as one short line: kind, function name and text.
#[allow(dead_code)]
pub fn line(event: &Event) -> String {
    let name = event
        .callsite
        .and_then(callsite)
        .map_or("-", |c| c.metadata().name);
    let kind = match event.kind {
        EventKind::Call => "call",
        EventKind::Return => "return",
        EventKind::Exception => "exception",
        EventKind::Send => "send",
        EventKind::Receive => "receive",
        EventKind::GotCall => "got_call",
        EventKind::GotCast => "got_cast",
        EventKind::GotInfo => "got_info",
        EventKind::Sent => "sent",
        EventKind::NewState => "new_state",
        EventKind::Got => "got",
        EventKind::Handled => "handled",
        EventKind::Log => "log",
        EventKind::In => "in",
        EventKind::Out => "out",
    };
    format!("{kind} {name} {}", event.text.as_deref().unwrap_or(""))
        .trim_end()
        .to_owned()
}
