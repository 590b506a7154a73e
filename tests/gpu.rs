//! The CUDA path against the CPU path (issue 13): the same photo, masks and model on both devices give LETs with
//! cosine >= 0.9999 per mask. Needs a build with `--features cuda` and a GPU; anywhere else each test says why it
//! skips. The GPU machine runs them with `cargo test --release --features cuda --test gpu`.

mod common;

use candle_core::Device;
use common::*;
use regionseek::clip::{ClipModel, ModelSource};
use regionseek::invert::{invert_image, GradChoice, InversionConfig};
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
        let got = lets(&on_gpu, image, masks, &cfg);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let cos = cosine(a, b);
            eprintln!("{name} {grad:?} mask {k}: CUDA vs CPU cosine {cos:.7}");
            assert!(cos >= 0.9999, "{name} {grad:?} mask {k}: cosine {cos}");
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
