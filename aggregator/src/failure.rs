//! Why a backend gave no usable answer. The text is what a client reads in a problem's
//! `detail`: it names the failure, never an address.

use crate::template::RenderError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Its own `timeout` or the aggregate's budget ran out.
    #[error("did not answer in time")]
    Timeout,
    /// A non-2xx status.
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered something that is not JSON")]
    NotJson,
    #[error("answered more than {0} bytes")]
    TooLarge(usize),
    /// An answer that is not an object, from a backend without `group`.
    #[error("answered JSON that is not an object and has no group to go under")]
    NotAnObject,
    /// The connection to Envoy's loopback listener failed or broke.
    #[error("could not be reached")]
    Unreachable,
    /// A backend it waits for failed.
    #[error("could not be called: `{backend}` gave no answer")]
    Dependency { backend: String, timeout: bool },
    /// Its path could not be built from the route variables and answers.
    #[error("could not be called: {0}")]
    Path(#[from] RenderError),
}

impl Failure {
    /// 504 for time budgets (also when a dependency ran out of time), 502 otherwise.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Failure::Timeout | Failure::Dependency { timeout: true, .. }
        )
    }

    /// Bounded label value for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
            Failure::NotJson => "not_json",
            Failure::TooLarge(_) => "too_large",
            Failure::NotAnObject => "not_object",
            Failure::Unreachable => "unreachable",
            Failure::Dependency { .. } => "dependency",
            Failure::Path(_) => "path",
        }
    }
}
