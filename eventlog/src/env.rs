//! The environment contract between the agent and the shim. The agent sets these for the program
//! it launches; the shim carries them (and `LD_PRELOAD`) through every exec and spawn, even when
//! the program passes an environment without them.

/// Descriptor number of the shared region in the program.
pub const SHM_FD: &str = "TANDEM_SHM_FD";
/// `record` (and later modes).
pub const MODE: &str = "TANDEM_MODE";
/// Read by the agent, passed to the shim through the shared region (never through the program's
/// environment): upper bound, in microseconds, of a random pause the shim makes before each call,
/// to perturb schedules in tests (set independently on a primary and its backup).
pub const JITTER_US: &str = "TANDEM_JITTER_US";
/// Read by the agent like `JITTER_US`: `1` makes a backup print every event it takes to stderr.
pub const TRACE: &str = "TANDEM_TRACE";
/// Width `LD_PRELOAD`'s value is padded to (with extra `/`s): the program's environment strings
/// must have the same lengths on hosts that install the shim in different places.
pub const PRELOAD_WIDTH: usize = 512;
/// Logical pid the process image should take.
pub const LPID: &str = "TANDEM_LPID";
/// Real pid that owns `TANDEM_LPID`, as `OWNER_WIDTH` zero-padded digits; all zeros for a
/// process started by the agent or by a hooked spawn (it takes the id and writes its own pid in).
/// Any other pid means the environment was inherited through an unhooked spawn (`system`): the
/// process is new and takes a fresh logical pid.
pub const LPID_OWNER: &str = "TANDEM_LPID_OWNER";
pub const OWNER_WIDTH: usize = 10;
/// Overrides where `tandem` looks for libtandem.so.
pub const PRELOAD_OVERRIDE: &str = "TANDEM_PRELOAD";
/// Where the agent places the region's descriptor in the program: high, out of the way of the
/// low numbers programs expect, and the same on every host.
pub const SHM_FD_NUMBER: i32 = 1023;

/// The all-zero owner value.
pub const OWNER_NONE: &str = "0000000000";
const _: () = assert!(OWNER_NONE.len() == OWNER_WIDTH);
