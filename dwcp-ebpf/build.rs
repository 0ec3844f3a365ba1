//! Rebuild the programs when the `bpf-linker` on PATH changes (it is an undeclared tool
//! dependency: cargo cannot track it on its own).

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
