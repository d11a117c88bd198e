//! The shim exports exactly the entry points the call declarations name, and routes exactly the
//! declared system call numbers from `syscall(2)` to their hooks.

use eventlog::call::SUPPORT_ENTRIES;
use eventlog::Call;
use std::collections::BTreeSet;
use std::process::Command;
use tandem_tests::*;

fn declared_entries() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = SUPPORT_ENTRIES.iter().map(|s| s.to_string()).collect();
    for &call in Call::ALL {
        names.extend(call.spec().entries.iter().map(|s| s.to_string()));
    }
    names
}

#[test]
fn the_shim_exports_exactly_the_declared_entry_points() {
    let lib = bin_dir().join("libtandem.so");
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&lib).output().expect("run nm");
    assert!(out.status.success(), "nm failed: {}", text(&out.stderr));
    let exported: BTreeSet<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "T").then(|| name.to_string())
        })
        .collect();
    let declared = declared_entries();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    assert!(undeclared.is_empty(), "exported but declared by no call in eventlog/src/call.rs: {undeclared:?}");
    assert!(missing.is_empty(), "declared in eventlog/src/call.rs but not exported by the shim: {missing:?}");
}

#[test]
fn syscall_routes_are_the_declared_ones() {
    let source = std::fs::read_to_string(root().join("preload/src/hooks/syscall.rs")).expect("read syscall.rs");
    let routed: BTreeSet<String> = source
        .split("libc::SYS_")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest[name.len()..].trim_start().starts_with(['=', 'i']).then_some(name)
        })
        .collect();
    let declared: BTreeSet<String> =
        Call::ALL.iter().flat_map(|c| c.spec().syscalls.iter().map(|s| s.to_string())).collect();
    assert_eq!(routed, declared, "syscall(2) routes in preload/src/hooks/syscall.rs against the declarations");
}
