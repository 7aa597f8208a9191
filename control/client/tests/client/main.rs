//! wasmkube-client against the real apiserver, in process (one test binary).

mod events;
mod leader_election;
