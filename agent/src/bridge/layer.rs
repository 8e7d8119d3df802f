//! The layer and its per-layer filter: which `tracing` callsites the bridge
//! wants, and what it records of the spans and events it gets.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use tracing_core::dispatcher::{Dispatch, WeakDispatch};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Metadata, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::fields::{EventText, ReturnValue, SpanFields, without_ansi};
use super::{CALLS, INSTALLED, LOGS, is_return_event, level_hint, lookup, register, wanted};
use crate::record::call::{SpanCall, record_log};
use crate::record::callsite::Callsite;
use crate::record::fmt::ArgWriter;
use crate::session::wants_args;
use nodetrace_protocol::CallsiteKind;

/// The bridge's per-layer filter: `always` for the callsites a session
/// selects, `never` for the rest; see [`super::tracing_layer`].
#[derive(Debug, Default)]
pub struct BridgeFilter {
    _private: (),
}

/// The bridge's layer: spans as calls, events as log lines; see
/// [`super::tracing_layer`].
#[derive(Debug, Default)]
pub struct Bridge {
    /// The subscriber the layer is in, to read its registry: from inside
    /// its own callbacks, `get_default` finds no subscriber when it is a
    /// scoped (`with_default`) one.
    dispatch: OnceLock<WeakDispatch>,
}

impl BridgeFilter {
    fn wants(cs: &Callsite, meta: &Metadata<'_>) -> bool {
        cs.is_enabled() || (is_return_event(meta) && CALLS.load(Ordering::Relaxed))
    }
}

impl<S> Filter<S> for BridgeFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        // Asked only for callsites another filter made `sometimes`.
        wanted() && lookup(meta).is_some_and(|cs| Self::wants(cs, meta))
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let cs = register(meta);
        if Self::wants(cs, meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_core::LevelFilter> {
        Some(level_hint())
    }
}

/// What the bridge keeps in a traced span, from its making to its close.
struct SpanState {
    cs: &'static Callsite,
    fields: SpanFields,
    /// The span was entered once: its call was recorded, if a session wanted it.
    started: bool,
    call: Option<SpanCall>,
    /// The value of its `ret` or `err` event.
    value: Option<String>,
}

fn with_state<S>(ctx: &Context<'_, S>, id: &Id, f: impl FnOnce(&mut SpanState))
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    if let Some(state) = span.extensions_mut().get_mut::<SpanState>() {
        f(state);
    }
}

impl Bridge {
    /// Runs `f` on the `Registry` at the root of the layer's subscriber.
    fn with_registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> Option<R> {
        if let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) {
            return dispatch.downcast_ref::<Registry>().map(f);
        }
        let mut f = Some(f);
        tracing_core::dispatcher::get_default(|d| {
            let registry = d.downcast_ref::<Registry>()?;
            f.take().map(|f| f(registry))
        })
    }

    /// The spans `event` happened in, root first, as `fmt` shows them
    /// (`apply{key="a"}:`). They are looked up in the `Registry` itself: a
    /// per-layer filter's context would show only the spans the bridge
    /// traces.
    fn write_context(&self, event: &Event<'_>, w: &mut ArgWriter) {
        let Some(Some(id)) = self.event_span_id(event) else {
            return;
        };
        self.with_registry(|registry| {
            let Some(span) = registry.span(&id) else {
                return;
            };
            for span in span.scope().from_root() {
                w.text(span.name());
                let extensions = span.extensions();
                if let Some(state) = extensions.get::<SpanState>() {
                    w.text(&format!("{{{}}}", state.fields.as_context()));
                } else if let Some(fields) = extensions.get::<FormattedFields<DefaultFields>>()
                    && !fields.is_empty()
                {
                    w.text(&format!("{{{}}}", without_ansi(&fields.fields)));
                }
                w.text(":");
            }
        });
    }

    /// The span `event` is in, traced or not: its explicit parent, else the
    /// registry's current span (`Some(None)`: in no span). `None` when the
    /// registry cannot be reached.
    fn event_span_id(&self, event: &Event<'_>) -> Option<Option<Id>> {
        if let Some(parent) = event.parent() {
            return Some(Some(parent.clone()));
        }
        if !event.is_contextual() {
            return Some(None);
        }
        self.with_registry(|registry| registry.current_span().id().cloned())
    }
}

impl<S> Layer<S> for Bridge
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_layer(&mut self, _: &mut S) {
        INSTALLED.store(true, Ordering::Relaxed);
    }

    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(cs) = lookup(attrs.metadata()) else {
            return;
        };
        if cs.kind() != CallsiteKind::Span || !cs.is_enabled() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Fields are formatted now or never: their values are gone after.
        let mut fields = SpanFields::default();
        if LOGS.load(Ordering::Relaxed) || wants_args(cs.flags()) {
            attrs.record(&mut fields);
        }
        span.extensions_mut().insert(SpanState {
            cs,
            fields,
            started: false,
            call: None,
            value: None,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        with_state(&ctx, id, |state| {
            if !state.started && (LOGS.load(Ordering::Relaxed) || wants_args(state.cs.flags())) {
                values.record(&mut state.fields);
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        with_state(&ctx, id, |state| {
            if let Some(call) = &mut state.call {
                call.enter();
            } else if !state.started {
                state.started = true;
                let args = state.fields.as_args();
                state.call = SpanCall::start(state.cs, &mut |w: &mut ArgWriter| w.text(&args));
            }
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        with_state(&ctx, id, |state| {
            if let Some(call) = &mut state.call {
                call.exit();
            }
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if is_return_event(meta) {
            // The span the event is in, not the nearest one the bridge
            // traces (which `ctx.event_span` gives): the `ret` of an
            // untraced inner span is not its traced caller's value.
            let span = match self.event_span_id(event) {
                Some(id) => id.and_then(|id| ctx.span(&id)),
                None => ctx.event_span(event),
            };
            if let Some(span) = span {
                let mut value = ReturnValue::default();
                event.record(&mut value);
                with_state(&ctx, &span.id(), |state| state.value = value.0);
            }
        }
        let Some(cs) = lookup(meta) else { return };
        let flags = cs.flags();
        if flags == 0 {
            return;
        }
        record_log(
            cs,
            flags,
            &mut |w| event.record(&mut EventText { out: w, written: 0 }),
            &mut |w| self.write_context(event, w),
        );
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<SpanState>() else {
            return;
        };
        if let Some(call) = state.call {
            call.close(state.value.as_deref());
        }
    }
}
