//! The tracer node: connects to traced nodes, collects their events and
//! renders them the way BEAM users read dbg output.
