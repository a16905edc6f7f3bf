//! Builds the kernels twice:
//! - with nvcc, when one is found: one fatbin per `kernels/*.cu` (SASS for sm_80, sm_86,
//!   sm_89, sm_90 and compute_80 PTX for newer GPUs), embedded through
//!   `$OUT_DIR/fatbins.rs`; `ptxas -v` goes to `$OUT_DIR/ptxas-report.txt` and any spill
//!   becomes a cargo warning. Without nvcc, `FATBINS` is empty and `cfg(has_kernels)` unset.
//! - always, with the host C++ compiler: the emulated device, ONE translation unit that
//!   includes the emulator runtime and every kernel (a kernel alone in its own object of a
//!   static library would be dropped by the linker, since only its registrar refers to it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Shipped SASS targets; compute_80 PTX is added for anything newer (JIT by the driver).
const SASS_ARCHS: [&str; 4] = ["80", "86", "89", "90"];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let kernels_dir = root.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rustc-check-cfg=cfg(has_kernels)");

    let sources = kernel_sources(&kernels_dir);
    build_fatbins(&root, &out, &sources);
    build_emulator(&root, &kernels_dir, &out, &sources);
}

/// `kernels/*.cu`, sorted; the emulator's own files under kernels/emu are not GPU kernels.
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    sources
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// nvcc from `$NVCC`, `$CUDA_HOME/bin`, `PATH`, or the pinned wheels that
/// scripts/setup-nvcc.sh installs into the repository's `.venv`.
fn find_nvcc(root: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = PathBuf::from(home).join("bin/nvcc");
        if p.is_file() {
            return Some(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join("nvcc"))
            .find(|p| p.is_file())
        {
            return Some(p);
        }
    }
    let lib = root.join(".venv/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python3"))
        })
        .collect();
    pythons.sort();
    pythons
        .into_iter()
        .map(|p| p.join("site-packages/nvidia/cu13/bin/nvcc"))
        .find(|p| p.is_file())
}

fn build_fatbins(root: &Path, out: &Path, sources: &[PathBuf]) {
    let fatbins_rs = out.join("fatbins.rs");
    let Some(nvcc) = find_nvcc(root) else {
        println!(
            "cargo:warning=nvcc not found ($NVCC, $CUDA_HOME/bin, PATH, .venv): building without \
             GPU kernels (scripts/setup-nvcc.sh installs the pinned one)"
        );
        std::fs::write(
            &fatbins_rs,
            "pub static FATBINS: &[(&str, &[u8])] = &[];\n\
             pub static KERNEL_MODULES: &[(&str, &str)] = &[];\n",
        )
        .unwrap();
        return;
    };
    // A wheel-installed nvcc found without $NVCC: rebuild when it is replaced.
    println!("cargo:rerun-if-changed={}", nvcc.display());

    // All files in parallel, at most one nvcc per core (each is itself single-threaded).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.min(sources.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(src) = sources.get(i) else { break };
                let report = compile_fatbin(&nvcc, src, &out.join(format!("{}.fatbin", stem(src))));
                reports.lock().unwrap().push((i, report));
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort();

    let mut text = String::new();
    for ((_, report), src) in reports.iter().zip(sources) {
        text.push_str(&format!("==== {} ====\n{report}\n", src.display()));
        for spill in spills(report) {
            println!("cargo:warning={}: {spill}", stem(src));
        }
    }
    let report_path = out.join("ptxas-report.txt");
    std::fs::write(&report_path, text).unwrap();
    println!(
        "cargo:rustc-env=KDAD_PTXAS_REPORT={}",
        report_path.display()
    );

    let mut rs = String::from(
        "/// Generated by build.rs: (kernel file stem, fatbin for sm_80/86/89/90 + compute_80 PTX).\n\
         pub static FATBINS: &[(&str, &[u8])] = &[\n",
    );
    for src in sources {
        let name = stem(src);
        let path = out.join(format!("{name}.fatbin"));
        rs.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    rs.push_str("];\n");
    // Which module defines each kernel, so that the launcher loads the right one without
    // probing the others (a failed lookup is an error that compute-sanitizer reports).
    rs.push_str(
        "/// Generated by build.rs: (kernel, file stem of the module defining it), from each \
         source's KDAD_KERNEL(name) lines.\n\
         pub static KERNEL_MODULES: &[(&str, &str)] = &[\n",
    );
    for src in sources {
        let text = std::fs::read_to_string(src).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("KDAD_KERNEL(") {
                let kernel = rest.split(')').next().unwrap().trim();
                rs.push_str(&format!("    ({kernel:?}, {:?}),\n", stem(src)));
            }
        }
    }
    rs.push_str("];\n");
    std::fs::write(&fatbins_rs, rs).unwrap();
    if !sources.is_empty() {
        println!("cargo:rustc-cfg=has_kernels");
    }
}

/// Compiles one file; returns nvcc's stderr (the ptxas -v report). A kernel that nvcc rejects
/// fails the build: every shipped kernel must compile for every shipped architecture.
fn compile_fatbin(nvcc: &Path, src: &Path, dst: &Path) -> String {
    let mut cmd = Command::new(nvcc);
    cmd.args(["-fatbin", "-O3", "-std=c++17", "-lineinfo", "-Xptxas", "-v"]);
    for arch in SASS_ARCHS {
        cmd.arg("-gencode")
            .arg(format!("arch=compute_{arch},code=sm_{arch}"));
    }
    cmd.args(["-gencode", "arch=compute_80,code=compute_80"]);
    cmd.arg("-o").arg(dst).arg(src);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        panic!(
            "nvcc failed on {}:\n{stderr}{}",
            src.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    stderr
}

/// "kernel for sm_XX: N bytes spill stores, M bytes spill loads" for every non-zero spill in
/// a ptxas -v report, which names the function before its properties.
fn spills(report: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut function = String::from("?");
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            function = rest.replace('\'', "");
        } else if line.contains("bytes spill stores") {
            let numbers: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            // "S bytes stack frame, T bytes spill stores, L bytes spill loads"
            if numbers.len() >= 3 && (numbers[1] > 0 || numbers[2] > 0) {
                found.push(format!("{function}: {}", line.trim()));
            }
        }
    }
    found
}

fn build_emulator(root: &Path, kernels_dir: &Path, out: &Path, sources: &[PathBuf]) {
    let mut tu = String::from(
        "// Generated by build.rs: the emulated device, in one translation unit.\n\
         #include \"emu/runtime.cpp\"\n",
    );
    for src in sources {
        tu.push_str(&format!(
            "#include \"{}\"\n",
            src.file_name().unwrap().to_string_lossy()
        ));
    }
    tu.push_str("#include \"emu/selftest.cu\"\n");
    let tu_path = out.join("kdad_emu.cpp");
    std::fs::write(&tu_path, tu).unwrap();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(&tu_path)
        .include(kernels_dir)
        .std("c++20")
        .opt_level(2)
        .flag("-fno-strict-aliasing")
        // The library is linked into executables only, so the fast TLS model is valid; it
        // turns every threadIdx and shared-memory access into one %fs-relative load.
        .flag("-ftls-model=initial-exec")
        // Large stack frames probe every page, so a kernel thread that outgrows its fiber
        // stack hits the guard page (an error) instead of the next thread's stack.
        .flag("-fstack-clash-protection")
        // Idioms of CUDA code that nvcc accepts silently: `#pragma unroll`, comparing the
        // unsigned threadIdx with int sizes, parameters a kernel variant does not use.
        .flag("-Wno-unknown-pragmas")
        .flag("-Wno-sign-compare")
        .flag("-Wno-unused-parameter")
        // __FILE__ in barrier errors reads kernels/x.cu, not this machine's absolute path.
        .flag(format!("-fmacro-prefix-map={}/=", root.display()));
    // -m flags only for features the Rust target itself already assumes, so the library runs
    // wherever the crate runs (e.g. FMA with RUSTFLAGS="-C target-cpu=...").
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    for (feature, flag) in [
        ("sse4.1", "-msse4.1"),
        ("sse4.2", "-msse4.2"),
        ("avx", "-mavx"),
        ("avx2", "-mavx2"),
        ("fma", "-mfma"),
        ("f16c", "-mf16c"),
    ] {
        if features.split(',').any(|f| f == feature) {
            build.flag(flag);
        }
    }
    build.compile("kdad_emu");
}
