//! Task flows: configured routes a task takes through the mesh (see `config`), and the
//! runner that drives staged flows (see `runner`).

mod config;
mod runner;

pub use config::{FlowDef, FlowKind, Flows, StageTypes};
pub use runner::FlowRunner;
