//! The agents a mesh process runs itself: the orchestrator's flow runner, and the
//! declared `[[agents]]`, in-process or as supervised `mesh worker` processes.

mod decl;
mod host;
mod supervise;

pub use decl::AgentDecl;
pub use host::{AgentHost, Endpoints, default_model};
