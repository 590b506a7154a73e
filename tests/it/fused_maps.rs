//! The fused map ops (`explain::fused`) against their generic twin on the CPU, where their implementation is
//! plain loops over the definition; tests/gpu.rs holds the CUDA kernels to the same twin.

use crate::common;

use candle_core::{Device, Tensor};
use common::*;
use regionseek::clip::{ClipModel, ModelSource};
use regionseek::explain::fused::{relu_colsum, relu_colsum_backward};
use regionseek::invert::{GradChoice, InversionConfig, MapKernel, StepLoop};
use regionseek::masks::BinaryMask;

#[test]
fn fused_ops_compute_their_definition() {
    // Sizes off every tile and chunk boundary: N not a multiple of 64, Dh not a multiple of 32.
    for (m, n, h, dh, seed) in [(3, 50, 2, 80, 1u64), (2, 65, 3, 64, 2), (1, 7, 1, 5, 3)] {
        let dev = Device::Cpu;
        let u = seeded_randn(&[m, n, h * dh], seed, &dev);
        let v = seeded_randn(&[h, n, dh], seed + 100, &dev);
        let w = seeded_randn(&[m, n], seed + 200, &dev);
        let fwd = relative_error(&relu_colsum(&u, &v).unwrap(), &dense_relu_colsum(&u, &v));
        let bwd = relative_error(
            &relu_colsum_backward(&u, &v, &w).unwrap(),
            &dense_relu_colsum_backward(&u, &v, &w),
        );
        eprintln!("M={m} N={n} H={h} Dh={dh}: forward rel. error {fwd:.1e}, backward {bwd:.1e}");
        assert!(fwd < 1e-5 && bwd < 1e-5, "forward {fwd}, backward {bwd}");
    }
    let u = Tensor::zeros((2, 10, 12), candle_core::DType::F32, &Device::Cpu).unwrap();
    let v = Tensor::zeros((5, 10, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(
        relu_colsum(&u, &v).is_err(),
        "H·Dh ≠ C must be refused, not read out of bounds"
    );
}

#[test]
fn inversion_with_fused_maps_matches_the_generic_one() {
    let model = ClipModel::load(&ModelSource::Dir(tiny_dir()), &Device::Cpu).unwrap();
    let masks: Vec<BinaryMask> = ["mask_rect.png", "mask_ellipse.png"]
        .iter()
        .map(|f| BinaryMask::read(&tiny_dir().join(f)).unwrap())
        .collect();
    for step_loop in [StepLoop::Host, StepLoop::Device] {
        let lets = |map_kernel| {
            let cfg = InversionConfig {
                size: 64,
                grad: GradChoice::Jacobian,
                map_kernel,
                step_loop,
                ..Default::default()
            };
            invert_fixture_pixels(&model, &masks, &cfg)
                .masks
                .into_iter()
                .map(|m| m.unwrap().embedding)
                .collect::<Vec<_>>()
        };
        let (generic, fused) = (lets(MapKernel::Generic), lets(MapKernel::Fused));
        for (k, (a, b)) in fused.iter().zip(&generic).enumerate() {
            let cos = cosine(a, b);
            eprintln!("{step_loop:?} mask {k}: fused vs generic cosine {cos:.9}");
            assert!(cos >= 0.99999, "{step_loop:?} mask {k}: cosine {cos}");
        }
    }
}
