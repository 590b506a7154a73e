//! The CUDA path against the CPU path (issue 13): the same photo, masks and model on both devices give LETs with
//! cosine >= 0.9999 per mask, with the generic map products and with the fused kernels; and each fused kernel
//! against its generic twin on random inputs. Needs a build with `--features cuda` and a GPU; anywhere else each test says why it
//! skips. The GPU machine runs them with `cargo test --release --features cuda --test it gpu::`.

use crate::common;

use candle_core::Device;
use common::*;
use regionseek::clip::{ClipModel, ModelSource};
use regionseek::explain::fused::{relu_colsum, relu_colsum_backward};
use regionseek::invert::fused_dice::map_dice;
use regionseek::invert::{invert_image, GradChoice, InversionConfig, MapKernel};
use regionseek::masks::BinaryMask;

fn cuda() -> Option<Device> {
    match regionseek::device::parse("cuda") {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP: no CUDA device here ({e})");
            None
        }
    }
}

fn lets(
    model: &ClipModel,
    image: &image::RgbImage,
    masks: &[BinaryMask],
    cfg: &InversionConfig,
) -> Vec<Vec<f32>> {
    invert_image(model, image, masks, cfg)
        .expect("inversion runs")
        .masks
        .into_iter()
        .map(|m| m.expect("every mask inverts").embedding)
        .collect()
}

fn compare(
    name: &str,
    source: &ModelSource,
    image: &image::RgbImage,
    masks: &[BinaryMask],
    size: usize,
) {
    let Some(gpu) = cuda() else { return };
    let on_cpu = ClipModel::load(source, &Device::Cpu).expect("model on the CPU");
    let on_gpu = ClipModel::load(source, &gpu).expect("model on the GPU");
    for grad in [GradChoice::Direct, GradChoice::Jacobian] {
        let cfg = InversionConfig {
            size,
            grad,
            ..Default::default()
        };
        let want = lets(&on_cpu, image, masks, &cfg);
        for map_kernel in [MapKernel::Generic, MapKernel::Fused] {
            let got = lets(
                &on_gpu,
                image,
                masks,
                &InversionConfig {
                    map_kernel,
                    ..cfg.clone()
                },
            );
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                let cos = cosine(a, b);
                eprintln!("{name} {grad:?} {map_kernel:?} mask {k}: CUDA vs CPU cosine {cos:.7}");
                assert!(
                    cos >= 0.9999,
                    "{name} {grad:?} {map_kernel:?} mask {k}: cosine {cos}"
                );
            }
        }
    }
}

#[test]
fn tiny_fixture_lets_match_the_cpu() {
    let image = regionseek::decode::load_rgb(&tiny_dir().join("image.png")).unwrap();
    let masks: Vec<BinaryMask> = ["mask_rect.png", "mask_ellipse.png"]
        .iter()
        .map(|f| BinaryMask::read(&tiny_dir().join(f)).unwrap())
        .collect();
    compare("tiny", &ModelSource::Dir(tiny_dir()), &image, &masks, 64);
}

#[test]
fn vit_b16_at_448_lets_match_the_cpu() {
    let (w, h) = (640usize, 480usize);
    let image = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let masks: Vec<BinaryMask> = (0..10)
        .map(|i| {
            let (x0, y0) = (20.0 + 50.0 * i as f64, 30.0 + 35.0 * i as f64);
            BinaryMask::from_box(w, h, x0, y0, x0 + 120.0, y0 + 90.0)
        })
        .collect();
    let source = ModelSource::parse("random:vit-b-16").unwrap();
    compare("random ViT-B/16", &source, &image, &masks, 448);
}

#[test]
fn fused_kernels_match_their_generic_twin() {
    let Some(gpu) = cuda() else { return };
    // B/16 at 448 (N = 785), L/14 at 224 (N = 257, 16 heads), and sizes off every tile and chunk boundary.
    for (m, n, h, dh, seed) in [
        (10, 785, 12, 64, 1u64),
        (4, 257, 16, 64, 2),
        (3, 50, 2, 80, 3),
        (1, 7, 1, 5, 4),
    ] {
        let cpu = Device::Cpu;
        let u = seeded_randn(&[m, n, h * dh], seed, &cpu);
        let v = seeded_randn(&[h, n, dh], seed + 100, &cpu);
        let w = seeded_randn(&[m, n], seed + 200, &cpu);
        let on = |t: &candle_core::Tensor| t.to_device(&gpu).unwrap();
        let fwd = relu_colsum(&on(&u), &on(&v)).unwrap();
        let bwd = relu_colsum_backward(&on(&u), &on(&v), &on(&w)).unwrap();
        let fwd_err = relative_error(&fwd.to_device(&cpu).unwrap(), &dense_relu_colsum(&u, &v));
        // A product within rounding of 0 may take the other side of the ReLU: a few of M·H·N² gates.
        let bwd_err = relative_error(
            &bwd.to_device(&cpu).unwrap(),
            &dense_relu_colsum_backward(&u, &v, &w),
        );
        eprintln!(
            "M={m} N={n} H={h} Dh={dh}: CUDA kernels vs twin: forward {fwd_err:.1e}, backward {bwd_err:.1e}"
        );
        assert!(fwd_err < 1e-5, "forward: relative error {fwd_err}");
        assert!(bwd_err < 1e-4, "backward: relative error {bwd_err}");
    }
}

#[test]
fn fused_map_dice_kernel_matches_its_cpu_twin() {
    let Some(gpu) = cuda() else { return };
    // B/16 at 448 (g = 28, S = 448), B/32 at 224 (g = 7, S = 224), and a small odd grid.
    for (m, g, s, seed) in [(10, 28, 448, 1u64), (5, 7, 224, 2), (3, 5, 15, 3)] {
        let cpu = Device::Cpu;
        let r = seeded_randn(&[m, g * g], seed, &cpu).abs().unwrap();
        // one flat map: no range, no gradient
        let r = candle_core::Tensor::cat(
            &[
                r.narrow(0, 0, m - 1).unwrap(),
                candle_core::Tensor::full(0.5f32, (1, g * g), &cpu).unwrap(),
            ],
            0,
        )
        .unwrap();
        let folded = seeded_randn(&[m, s * s], seed + 100, &cpu)
            .gt(0.3f32)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let rho = (seeded_randn(&[s * s], seed + 200, &cpu).abs().unwrap() + 0.5).unwrap();
        let area = (seeded_randn(&[m], seed + 300, &cpu).abs().unwrap() * 1000.0).unwrap();
        let consts = candle_core::Tensor::cat(&[rho, area], 0).unwrap();
        let want = map_dice(&r, &folded, &consts, g, s, 0.1).unwrap();
        let on = |t: &candle_core::Tensor| t.to_device(&gpu).unwrap();
        let got = map_dice(&on(&r), &on(&folded), &on(&consts), g, s, 0.1)
            .unwrap()
            .to_device(&cpu)
            .unwrap();
        let err = relative_error(&got, &want);
        eprintln!("M={m} g={g} S={s}: map Dice kernels vs twin: relative error {err:.1e}");
        assert!(err < 1e-4, "relative error {err}");
        let flat: Vec<f32> = got.get(m - 1).unwrap().to_vec1().unwrap();
        assert_eq!(flat[g * g + 1], 0.0, "the flat map is reported flat");
        assert!(
            flat[..g * g].iter().all(|v| *v == 0.0),
            "a flat map has no gradient"
        );
    }
}
