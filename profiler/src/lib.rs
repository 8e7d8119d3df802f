//! cprof, eprof and fprof reports, flamegraphs and timer.tc over what the
//! tracer collects.
