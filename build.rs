//! Lays out the release binary's hot code together: the functions listed in
//! `link/hot-functions.txt` (what a serving box runs, recorded by `scripts/hot-functions.sh`)
//! go first in the code, in one block.
//!
//! Why: the kernel maps a program's code in around every page it touches, so code used once
//! at start and on every turn, scattered over 12.8 MB, kept most of the binary resident (the
//! process's file-backed pages were ~12 MiB of an idle box's ~24 MiB). Packed together, the
//! same functions are ~3.3 MB, and an idle box keeps ~4 MiB less.
//!
//! Only for release builds on x86_64 Linux, whose default linker (rust-lld since Rust 1.90;
//! this crate needs 1.95) takes an ordering file, and only when no other linker is chosen.
//! Names the file lists that the build lacks (a dependency updated since it was recorded)
//! are skipped without a warning: a stale list costs memory, never a build.

use std::env;
use std::path::Path;

const ORDER_FILE: &str = "link/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let lld_default = var("TARGET") == "x86_64-unknown-linux-gnu";
    // A linker of the user's choosing may not know the option (GNU ld before 2.43).
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || ["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|flag| rustflags.contains(flag));
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    if release && lld_default && !own_linker && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=lang-agent=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=lang-agent=-Wl,--no-warn-symbol-ordering");
    }
}
