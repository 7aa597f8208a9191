//! Node lifecycle end to end (being written).
