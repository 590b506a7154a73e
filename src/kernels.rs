//! Launching regionseek's own CUDA kernels (compiled to PTX by build.rs with the `cuda` feature) from candle
//! custom ops: `explain::fused` (the map's products) and `invert::fused_dice` (upsampling, normalisation and
//! Dice). Also what their CPU implementations share.

use candle_core::{CpuStorage, Layout, Result};

/// A custom op's contiguous f32 input on the CPU.
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

#[cfg(feature = "cuda")]
pub(crate) use cuda::{Launch, Scalar};

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Result};

    /// A kernel's scalar argument.
    pub(crate) enum Scalar {
        I32(i32),
        F32(f32),
    }

    /// One launch: the kernel `name` from `ptx` (loaded once per device under `module`).
    pub(crate) struct Launch<'a> {
        pub module: &'static str,
        pub ptx: &'static str,
        pub name: &'static str,
        pub grid: (u32, u32, u32),
        pub threads: u32,
        pub shared_bytes: u32,
        /// Contiguous f32 inputs, passed first, in order.
        pub inputs: &'a [(&'a CudaStorage, &'a Layout)],
        /// Lengths of the zeroed f32 buffers passed after the inputs (outputs and scratch).
        pub buffers: &'a [usize],
        /// Passed last.
        pub scalars: &'a [Scalar],
    }

    impl Launch<'_> {
        /// Runs the kernel and returns its buffers.
        ///
        /// # Safety
        /// The kernel must read no more of each input and write no more of each buffer than their lengths,
        /// for the scalars given.
        pub unsafe fn run(&self) -> Result<Vec<CudaSlice<f32>>> {
            let dev = self.inputs[0].0.device.clone();
            let views = self
                .inputs
                .iter()
                .map(|(s, l)| contiguous_f32(s, l))
                .collect::<Result<Vec<_>>>()?;
            let buffers = self
                .buffers
                .iter()
                .map(|&len| dev.alloc_zeros::<f32>(len.max(1)))
                .collect::<Result<Vec<_>>>()?;
            let func = dev.get_or_load_custom_func(self.name, self.module, self.ptx)?;
            let mut args = func.builder();
            for v in &views {
                args.arg(v);
            }
            for b in &buffers {
                args.arg(b);
            }
            for s in self.scalars {
                match s {
                    Scalar::I32(v) => args.arg(v),
                    Scalar::F32(v) => args.arg(v),
                };
            }
            let cfg = LaunchConfig {
                grid_dim: self.grid,
                block_dim: (self.threads, 1, 1),
                shared_mem_bytes: self.shared_bytes,
            };
            args.launch(cfg).w()?;
            Ok(buffers)
        }
    }

    fn contiguous_f32<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
        match l.contiguous_offsets() {
            Some((start, end)) => Ok(s.as_cuda_slice::<f32>()?.slice(start..end)),
            None => candle_core::bail!("custom kernel inputs must be contiguous"),
        }
    }
}
