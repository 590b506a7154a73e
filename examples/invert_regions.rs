//! Library use in a few lines: invert the reference's cat and dog masks and rank two labels.
//! `cargo run --release --example invert_regions [MODEL]` (default `random:vit-b-16`; pass a model
//! directory for meaningful labels).

use regionseek::clip::ClipModel;
use regionseek::invert::{invert_image, InversionConfig};
use regionseek::masks::BinaryMask;

fn main() -> anyhow::Result<()> {
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "random:vit-b-16".into());
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/maskinversion-examples");
    if !data.is_dir() {
        anyhow::bail!(
            "{} not found: this example reads the shared example images",
            data.display()
        );
    }
    let model = ClipModel::load_spec(&spec, &candle_core::Device::Cpu)?;
    let image = regionseek::decode::load_rgb(&data.join("cats_and_dogs.jpg"))?;
    let masks = ["cat_mask.png", "dog_mask.png"]
        .iter()
        .map(|f| BinaryMask::read(&data.join(f)))
        .collect::<Result<Vec<_>, _>>()?;
    let out = invert_image(&model, &image, &masks, &InversionConfig::default())?;
    let labels = [
        "a photo of a cat.".to_string(),
        "a photo of a dog.".to_string(),
    ];
    let texts = model
        .encode_texts(model.tokenizer()?, &labels)?
        .to_vec2::<f32>()?;
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<_>>()
    };
    for (name, r) in ["cat", "dog"].iter().zip(&out.masks) {
        let r = r.as_ref().map_err(|e| anyhow::anyhow!(e.clone()))?;
        let e = unit(&r.embedding);
        let sims: Vec<f32> = texts
            .iter()
            .map(|t| unit(t).iter().zip(&e).map(|(a, b)| a * b).sum())
            .collect();
        println!(
            "{name} mask: dice {:.3}, cosine to cat {:.4}, dog {:.4}",
            r.final_dice, sims[0], sims[1]
        );
    }
    println!("model {} ({} path)", model.id(), out.report.grad_path);
    Ok(())
}
