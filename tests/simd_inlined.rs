//! The CPU ops' SIMD loops must be inlined, intrinsics included, into their
//! `#[target_feature]` entry points (src/device/cpu/simd.rs): where the compiler declines, each
//! intrinsic becomes a function call and the loop runs slower than scalar code. That happened
//! to the softmax loops of the attention in the `kdad` binary (a ViT-B/14 forward took 345 ms
//! instead of 254) while the benchmark binaries, compiled with other inlining decisions, were
//! fine; so this reads the shipped binary's machine code.

use std::process::Command;

#[test]
fn kdad_binary_calls_no_intrinsic_as_a_function() {
    let exe = env!("CARGO_BIN_EXE_kdad");
    let out = match Command::new("objdump")
        .args(["-d", "-C", "--no-show-raw-insn", exe])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => panic!(
            "objdump failed on {exe}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("skipped: objdump is not available ({e})");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut function = "";
    let mut offenders = std::collections::BTreeMap::<&str, usize>::new();
    for line in text.lines() {
        // "0000000000401000 <name>:" starts a function.
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            function = name.1;
        } else if line.contains("call")
            && line.contains("core::core_arch::")
            && function.starts_with("kdad::")
        {
            *offenders.entry(function).or_default() += 1;
        }
    }
    assert!(
        offenders.is_empty(),
        "intrinsics called as functions (not inlined) in: {offenders:#?}"
    );
}
