//! Just enough ELF64 (little-endian) reading for building the guest: whether a binary is
//! statically linked, and the `key=value` strings of a kernel module's `.modinfo`.

use anyhow::{Context as _, Result, ensure};

/// Program header type of the dynamic loader request.
const PT_INTERP: u32 = 3;

/// A checked little-endian reader over an ELF64 file.
struct Elf<'a> {
    /// The whole file.
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    /// Checks the identification bytes.
    fn new(bytes: &'a [u8]) -> Result<Self> {
        ensure!(
            bytes.get(..4) == Some(b"\x7fELF"),
            "Not an ELF file (bad magic)"
        );
        ensure!(
            bytes.get(4..6) == Some(&[2, 1]),
            "Not a 64-bit little-endian ELF file"
        );
        Ok(Self { bytes })
    }

    /// `N` bytes at `at`.
    fn array<const N: usize>(&self, at: u64) -> Result<[u8; N]> {
        let start = usize::try_from(at)?;
        let slice = self
            .bytes
            .get(start..start.checked_add(N).context("ELF offset overflows")?)
            .context("ELF file is truncated")?;
        Ok(slice.try_into()?)
    }

    fn u16(&self, at: u64) -> Result<u16> {
        self.array(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: u64) -> Result<u32> {
        self.array(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: u64) -> Result<u64> {
        self.array(at).map(u64::from_le_bytes)
    }

    /// `len` bytes at `at`.
    fn slice(&self, at: u64, len: u64) -> Result<&'a [u8]> {
        let start = usize::try_from(at)?;
        let end = start
            .checked_add(usize::try_from(len)?)
            .context("ELF section overflows")?;
        self.bytes.get(start..end).context("ELF file is truncated")
    }
}

/// Whether the ELF executable `bytes` runs without a dynamic loader (no `PT_INTERP`).
pub fn is_static(bytes: &[u8]) -> Result<bool> {
    let elf = Elf::new(bytes)?;
    let phoff = elf.u64(0x20)?;
    let phentsize = u64::from(elf.u16(0x36)?);
    let phnum = u64::from(elf.u16(0x38)?);
    for i in 0..phnum {
        if elf.u32(phoff + i * phentsize)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The contents of the section called `name`, if there is one.
pub fn section<'a>(bytes: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    let elf = Elf::new(bytes)?;
    let shoff = elf.u64(0x28)?;
    let shentsize = u64::from(elf.u16(0x3A)?);
    let shnum = u64::from(elf.u16(0x3C)?);
    let shstrndx = u64::from(elf.u16(0x3E)?);
    let header = |i: u64| shoff + i * shentsize;
    let names_at = elf.u64(header(shstrndx) + 24)?;
    for i in 0..shnum {
        let h = header(i);
        let name_at = names_at + u64::from(elf.u32(h)?);
        let start = usize::try_from(name_at)?;
        let tail = bytes
            .get(start..)
            .context("ELF section name is out of range")?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if &tail[..end] == name.as_bytes() {
            return elf.slice(elf.u64(h + 24)?, elf.u64(h + 32)?).map(Some);
        }
    }
    Ok(None)
}

/// The `key=value` strings of a kernel module's `.modinfo` section.
pub fn modinfo(module: &[u8]) -> Result<Vec<(String, String)>> {
    let info = section(module, ".modinfo")?.context("The module has no .modinfo section")?;
    Ok(info
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_has_sections() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The host test binary is linked against glibc dynamically.
        assert!(!is_static(&exe).unwrap());
        assert!(
            section(&exe, ".text")
                .unwrap()
                .is_some_and(|t| !t.is_empty())
        );
        assert!(section(&exe, ".no-such-section").unwrap().is_none());
    }

    #[test]
    fn refuses_what_is_not_elf() {
        let err = is_static(b"#!/bin/sh\n").unwrap_err().to_string();
        assert_eq!(err, "Not an ELF file (bad magic)");
        let truncated = b"\x7fELF\x02\x01\x01\0\0\0\0\0";
        assert!(
            is_static(truncated)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(modinfo(truncated).is_err());
    }
}
