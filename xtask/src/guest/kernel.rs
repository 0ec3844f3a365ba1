//! The guest kernel from its Debian package: `vmlinuz` and the loadable modules the guest
//! needs (with the modules they depend on, in load order).
//!
//! Debian's package ships no `modules.dep` (depmod runs at install time), so dependencies
//! come from each module's own `.modinfo` (`depends=`). A wanted module listed in
//! `modules.builtin` is part of the kernel image and needs nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read,
    path::Path,
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{debs, elf};

/// A loadable kernel module.
#[derive(Debug, Clone)]
pub struct Module {
    /// Its name (`.modinfo` `name=`), e.g. `button`.
    pub name: String,
    /// Its path in the package, e.g. `lib/modules/6.1.0-56-amd64/kernel/drivers/acpi/button.ko`.
    pub path: String,
    /// The object file.
    pub bytes: Vec<u8>,
}

/// What the guest takes from the kernel package.
#[derive(Debug)]
pub struct Kernel {
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The compressed kernel image.
    pub vmlinuz: Vec<u8>,
    /// The modules to load, dependencies first.
    pub modules: Vec<Module>,
    /// The wanted modules that are built into the image.
    pub builtin: Vec<String>,
}

/// What one pass over the package found.
#[derive(Debug, Default)]
struct Scan {
    /// `(release, bytes)` of `boot/vmlinuz-<release>`.
    vmlinuz: Option<(String, Vec<u8>)>,
    /// Module names in `modules.builtin`.
    builtin: BTreeSet<String>,
    /// Every module: name to (path, dependencies).
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// The bytes of the modules that were asked for.
    kept: BTreeMap<String, Vec<u8>>,
}

/// Reads `vmlinuz` and the modules `wanted` (by name) plus their dependencies from the
/// kernel package `deb`.
pub fn extract(deb: &Path, wanted: &[&str]) -> Result<Kernel> {
    let mut keep: BTreeSet<String> = wanted.iter().map(|w| (*w).to_owned()).collect();
    // Usually one pass; another only if a dependency was not kept the first time.
    for _ in 0..4 {
        let scan = scan(deb, &keep)?;
        let (release, vmlinuz) = scan
            .vmlinuz
            .clone()
            .context("The package has no boot/vmlinuz-*")?;
        let mut order = Vec::new();
        let mut builtin = Vec::new();
        for name in wanted {
            if scan.builtin.contains(*name) {
                builtin.push((*name).to_owned());
            } else {
                visit(name, &scan.deps, &mut order, &mut Vec::new())?;
            }
        }
        let missing: Vec<String> = order
            .iter()
            .filter(|name| !scan.kept.contains_key(*name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            keep.extend(missing);
            continue;
        }
        let modules = order
            .into_iter()
            .map(|name| {
                let path = scan.deps[&name].0.clone();
                let bytes = scan.kept[&name].clone();
                Module { name, path, bytes }
            })
            .collect();
        return Ok(Kernel {
            release,
            vmlinuz,
            modules,
            builtin,
        });
    }
    bail!("The dependencies of modules {wanted:?} did not settle after 4 passes")
}

/// Puts `name`'s dependencies, then `name`, into `order` (once each).
fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    order: &mut Vec<String>,
    stack: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    ensure!(
        !stack.iter().any(|n| n == name),
        "Module dependency cycle: {} -> {name}",
        stack.join(" -> ")
    );
    let (_, needs) = deps.get(name).with_context(|| {
        format!("The kernel package has no module `{name}`, loadable or built in")
    })?;
    stack.push(name.to_owned());
    for dep in needs {
        visit(dep, deps, order, stack)?;
    }
    stack.pop();
    order.push(name.to_owned());
    Ok(())
}

/// One pass over the package, keeping the bytes of the modules in `keep`.
fn scan(deb: &Path, keep: &BTreeSet<String>) -> Result<Scan> {
    let mut scan = Scan::default();
    debs::for_each_file(deb, |path, reader| {
        if let Some(release) = path.strip_prefix("boot/vmlinuz-") {
            scan.vmlinuz = Some((release.to_owned(), read_all(reader)?));
        } else if path.starts_with("lib/modules/") && path.ends_with("/modules.builtin") {
            let text = String::from_utf8(read_all(reader)?)?;
            scan.builtin.extend(text.lines().filter_map(builtin_name));
        } else if path.starts_with("lib/modules/") && path.ends_with(".ko") {
            let bytes = read_all(reader)?;
            let info =
                elf::modinfo(&bytes).with_context(|| format!("Cannot read module {path}"))?;
            let field = |key: &str| info.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let name = field("name").with_context(|| format!("Module {path} has no name"))?;
            let depends = field("depends").unwrap_or_default();
            let needs = depends
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            if keep.contains(&name) {
                scan.kept.insert(name.clone(), bytes);
            }
            scan.deps.insert(name, (path.to_owned(), needs));
        } else if path.starts_with("lib/modules/") && path.contains(".ko.") {
            bail!("Compressed kernel modules are not supported ({path})");
        }
        Ok(())
    })?;
    Ok(scan)
}

/// The module name of a `modules.builtin` line (`kernel/drivers/acpi/button.ko`).
fn builtin_name(line: &str) -> Option<String> {
    let file = line.trim().rsplit('/').next()?;
    Some(file.strip_suffix(".ko")?.replace('-', "_"))
}

/// All bytes of `reader`.
fn read_all(reader: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(list: &[(&str, &[&str])]) -> BTreeMap<String, (String, Vec<String>)> {
        list.iter()
            .map(|(n, d)| {
                let needs = d.iter().map(|s| (*s).to_owned()).collect();
                ((*n).to_owned(), (format!("x/{n}.ko"), needs))
            })
            .collect()
    }

    #[test]
    fn orders_dependencies_first() {
        let deps = deps(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[]), ("d", &[])]);
        let mut order = Vec::new();
        visit("a", &deps, &mut order, &mut Vec::new()).unwrap();
        visit("d", &deps, &mut order, &mut Vec::new()).unwrap();
        visit("b", &deps, &mut order, &mut Vec::new()).unwrap();
        assert_eq!(order, ["c", "b", "a", "d"]);
    }

    #[test]
    fn reports_missing_modules_and_cycles() {
        let deps = deps(&[("a", &["b"]), ("b", &["a"]), ("c", &["zz"])]);
        let err = visit("a", &deps, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "Module dependency cycle: a -> b -> a");
        let err = visit("c", &deps, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The kernel package has no module `zz`, loadable or built in"
        );
    }

    #[test]
    fn reads_builtin_names() {
        assert_eq!(
            builtin_name("kernel/drivers/acpi/ac-x.ko").as_deref(),
            Some("ac_x")
        );
        assert_eq!(builtin_name("modules.order"), None);
    }
}
