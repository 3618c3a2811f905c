//! Limits on what users store, each a named constant (docs/api.md lists them). Validation
//! refuses a value past one with a 422 that names the field, the value's size and the
//! limit, so that nothing stored can make the controller's or an agent's work grow faster
//! than its size, or fail later where the user cannot see why (DESIGN.md §11).

/// Instances one app may ask for, unless the API server is told otherwise
/// (`--max-instances-per-app`).
pub const DEFAULT_MAX_INSTANCES_PER_APP: i32 = 10_000;

/// Label values, as Kubernetes: 63 characters (see [`crate::names::label_value_problem`]).
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// All of an object's annotations together, keys and values, as Kubernetes
/// (`TotalAnnotationSizeLimitB`).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// One argument, or one `NAME=value` environment string, of an instance's process: what
/// Linux' `execve` takes (`MAX_ARG_STRLEN`, 32 pages, with the terminating NUL).
pub const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// An app's `cmd`, or all of its `args` together (each also within [`MAX_ARG_BYTES`]).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// All of an app's environment variables together, as `NAME=value` strings. With the
/// command and the variables the agent adds, well within the 2 MiB `execve` takes in all.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// Placement constraints of one app.
pub const MAX_CONSTRAINTS: usize = 32;

/// Dependencies of one app or AppGroup.
pub const MAX_DEPENDENCIES: usize = 32;

/// Segments of a group path (`spec.group`, an AppGroup's `spec.path`, a dependency):
/// `/a/b/c` has 3.
pub const MAX_GROUP_DEPTH: usize = 16;

/// Limits an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Instances one app may ask for.
    pub max_instances_per_app: i32,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self { max_instances_per_app: DEFAULT_MAX_INSTANCES_PER_APP }
    }
}
