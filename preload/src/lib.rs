//! libtandem.so: loaded into an unmodified program with `LD_PRELOAD`, it intercepts the calls
//! that make the program's behaviour nondeterministic or visible to the world and records each as
//! an event in one global order.
//!
//! Rules for everything in this crate (the code runs inside someone else's process, on its
//! threads, inside its signal handlers): resolve real functions once, up front; never allocate,
//! lock, print or panic on the way through a hook; reach the kernel directly rather than through
//! a libc function the shim itself hooks.

mod dl;
mod fdtable;
mod hooks;
mod init;
mod msg;
mod real;
mod replay;
mod seccomp;
mod signals;
mod state;
mod sys;
