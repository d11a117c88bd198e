//! The coordinator: the authority on which member of a replica group is primary, in which epoch,
//! and of which incarnation. Not built yet; the recording and replay layers come first.
