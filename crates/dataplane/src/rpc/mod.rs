//! One file per RPC family the data port serves: ModelInfer (`infer`), ModelStreamInfer
//! (`stream`), the model and server metadata RPCs (`metadata`), health (`health`, with the
//! active probes of the upstreams) and server reflection (`reflection`).

pub mod health;
pub mod infer;
pub mod metadata;
pub mod reflection;
pub mod stream;
