//! The crate's layers (the rule in `src/lib.rs`'s doc): a module names only modules of lower
//! layers, and the domains of one layer never name each other. This reads `src/` and fails
//! on the first `crate::…` path that points sideways or up, so the knot the bot once tied
//! (every domain importing `bot`, `bot` importing every domain) cannot quietly grow back.

use std::collections::BTreeMap;
use std::path::Path;

/// Top-level modules by layer, lowest first. Modules of layer 0 are the foundation and may
/// name each other; above it, a module names only lower layers.
const LAYERS: &[&[&str]] = &[
    &[
        "util",
        "money",
        "clock",
        "config",
        "logging",
        "ratelimit",
        "metrics",
        "failpoint",
        "proto",
        "store",
        "identity",
        "vault",
    ],
    // The embedded dev mint stands on the foundation alone; the wallet's tests run on it.
    &["devmint"],
    &["relay", "wallet", "lnurl"],
    &["outbound"],
    &["market"],
    // The domains: peers, each unaware of the others (cross-domain effects go through
    // traits given at construction, like the escrow's PaidOrderListener).
    &["escrow", "agents", "sessions", "exchange"],
    &["ussd", "notices"],
    &["commands", "inbox"],
    &["bot", "bridge"],
    &["daemon", "operator", "main", "bin", "lib"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `crate::x` paths in code (comments skipped), as the `x`s.
fn named_modules(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (file, named module) pair that breaks the rule.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_owned();
        let Some(own) = layer_of(&top) else {
            broken.push(format!(
                "{}: module `{top}` has no layer in tests/layers.rs",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap_or_default();
        for named in named_modules(&source) {
            if named == top {
                continue;
            }
            let Some(theirs) = layer_of(&named) else {
                broken.push(format!(
                    "{}: names `crate::{named}`, which has no layer",
                    relative.display()
                ));
                continue;
            };
            if theirs > own || (theirs == own && own > 0) {
                broken.push(format!(
                    "{}: `{top}` (layer {own}) names `crate::{named}` (layer {theirs})",
                    relative.display()
                ));
            }
        }
    }
    broken
}

#[test]
fn every_module_names_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let broken = violations(&src);
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

/// The check itself catches what it is for: a domain reaching up to the bot or the menus,
/// and one domain naming another.
#[test]
fn the_check_sees_a_domain_reaching_up_or_sideways() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cases: BTreeMap<&str, &str> = [
        ("escrow/up.rs", "use crate::bot::Handler;"),
        ("agents/menus.rs", "fn f() { crate::ussd::service::x(); }"),
        ("escrow/peer.rs", "use crate::agents::Links;"),
        (
            "market/fine.rs",
            "use crate::outbound::Publisher; // crate::bot in a comment",
        ),
    ]
    .into_iter()
    .collect();
    for (path, code) in &cases {
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().ok_or("no parent")?)?;
        std::fs::write(file, code)?;
    }
    let broken = violations(dir.path());
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(broken.iter().any(|b| b.contains("`crate::bot`")));
    assert!(broken.iter().any(|b| b.contains("`crate::ussd`")));
    assert!(broken.iter().any(|b| b.contains("`crate::agents`")));
    Ok(())
}
