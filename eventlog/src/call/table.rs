//! The call table of ARCHITECTURE.md, made from the declarations. A test keeps the document's
//! copy equal to it (`TANDEM_BLESS=1 cargo test -p eventlog call_table` rewrites it).

use super::spec::{Slot, Spec};
use super::Call;

/// Where the generated table starts and ends in ARCHITECTURE.md.
pub const BEGIN: &str = "<!-- call table: generated from eventlog/src/call.rs, do not edit -->";
pub const END: &str = "<!-- end of call table -->";

/// A slot's fields; a field the backup checks is in bold.
fn slot(s: Slot, checked: bool) -> String {
    let name = |n: &str| if checked { format!("**{n}**") } else { n.to_string() };
    match s {
        Slot::Unused => String::new(),
        Slot::One(f) => name(f.name),
        Slot::Halves(lo, hi) => format!("{} (low 32), {} (high 32)", name(lo.name), name(hi.name)),
    }
}

fn signature(call: Call, spec: &Spec) -> String {
    let args: Vec<String> = spec.args.iter().map(|a| a.name.to_string()).collect();
    if spec.entries.is_empty() {
        format!("`{}`", call.name())
    } else {
        format!("`{}({})`", call.name(), args.join(", "))
    }
}

fn also(call: Call, spec: &Spec) -> String {
    let mut names: Vec<String> = spec.entries.iter().filter(|e| **e != call.name()).map(|e| format!("`{e}`")).collect();
    names.extend(spec.syscalls.iter().map(|s| format!("`syscall(SYS_{s})`")));
    names.join(" ")
}

/// The markdown table: one row per call, in id order.
pub fn markdown() -> String {
    let mut out = String::from(
        "| id | call | also as | backup | seq | fd | aux[0] | aux[1] | payload | digest |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &call in Call::ALL {
        let s = call.spec();
        let payload: Vec<&str> = s.payload.iter().map(|p| p.name).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            call as u16,
            signature(call, s),
            also(call, s),
            s.replay.describe(),
            s.order.describe(),
            slot(s.fd, s.checks.fd),
            slot(s.aux[0], s.checks.aux[0]),
            slot(s.aux[1], s.checks.aux[1]),
            payload.join(", "),
            s.digest,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_table_in_architecture_md_matches_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
        let doc = std::fs::read_to_string(&path).expect("read ARCHITECTURE.md");
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("ARCHITECTURE.md has no call table markers ({BEGIN} ... {END})");
        };
        let current = &doc[b + BEGIN.len()..e];
        let wanted = format!("\n{}", markdown());
        if current == wanted {
            return;
        }
        if std::env::var_os("TANDEM_BLESS").is_some() {
            let fresh = format!("{}{}{}", &doc[..b + BEGIN.len()], wanted, &doc[e..]);
            std::fs::write(&path, fresh).expect("write ARCHITECTURE.md");
            return;
        }
        panic!(
            "the call table in ARCHITECTURE.md differs from the declarations in eventlog/src/call.rs; \
             regenerate it with TANDEM_BLESS=1 cargo test -p eventlog call_table"
        );
    }

    #[test]
    fn every_call_has_a_distinct_entry_set() {
        let mut seen = std::collections::HashSet::new();
        for &call in Call::ALL {
            for e in call.spec().entries {
                assert!(seen.insert(*e), "{e} is declared by two calls");
            }
            let fields = call.spec().args.iter().map(|a| a.name);
            let mut names = std::collections::HashSet::new();
            for f in fields {
                assert!(names.insert(f), "{call}: argument {f} declared twice");
            }
        }
    }
}
