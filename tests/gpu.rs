//! The CUDA path against the CPU path (issue 13): the same photo, masks and model on both devices give LETs with
//! cosine >= 0.9999 per mask, with the generic map products and with the fused kernels; and each fused kernel
//! against its generic twin on random inputs. Needs a build with `--features cuda` and a GPU; anywhere else each test says why it
//! skips. The GPU machine runs them with `cargo test --release --features cuda --test gpu`.

mod common;

use candle_core::Device;
use common::*;
use regionseek::clip::{ClipModel, ModelSource};
use regionseek::explain::fused::{relu_colsum, relu_colsum_backward};
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
