//! With the `cuda` feature: compiles regionseek's own kernels (the fused LeGrad products, the fused map Dice)
//! to PTX with nvcc, for the compute capability in CUDA_COMPUTE_CAP (default 80; the driver compiles PTX for
//! newer cards on load). Without it there is nothing to build.

const KERNELS: [(&str, &str); 2] = [
    ("src/explain/kernels/legrad.cu", "legrad.ptx"),
    ("src/invert/kernels/map_dice.cu", "map_dice.ptx"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| std::path::PathBuf::from(home).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "nvcc".into());
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (source, ptx) in KERNELS {
        println!("cargo:rerun-if-changed={source}");
        let status = std::process::Command::new(&nvcc)
            .args(["--ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
            .arg(out_dir.join(ptx))
            .arg(source)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {} for {source}: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {source}");
    }
}
