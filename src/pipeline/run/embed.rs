//! Region embeddings of a photo's masks by the spec's method (MaskInversion or a baseline), and the method's
//! description recorded with each row.

use image::RgbImage;

use crate::baselines;
use crate::clip::ClipModel;
use crate::index::MethodInfo;
use crate::invert::{invert_images, validate_mask, InversionConfig};
use crate::masks::BinaryMask;

use crate::pipeline::spec::EmbedStage;

pub fn method_info(
    model: &ClipModel,
    weights_hash: &str,
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> MethodInfo {
    let inverted = stage == EmbedStage::Invert;
    MethodInfo {
        name: stage.name().to_string(),
        steps: inverted.then_some(cfg.steps as u32),
        lr: inverted.then_some(cfg.lr as f32),
        alpha: inverted.then_some(cfg.alpha as f32),
        resolution: Some(if inverted {
            cfg.size
        } else {
            model.config.vision.image_size
        } as u32),
        model_id: model.id(),
        weights_hash: weights_hash.to_string(),
    }
}

/// Per photo, its masks' embeddings or why the photo failed; per mask, its embedding or why not.
pub type PhotoEmbeddings = Result<Vec<Result<Vec<f32>, String>>, String>;

/// Embeddings of masks of one photo with the chosen method; each mask succeeds or fails on its own.
pub fn embed_masks(
    model: &ClipModel,
    image: &RgbImage,
    masks: &[BinaryMask],
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> PhotoEmbeddings {
    embed_photos(model, &[(image, masks)], stage, cfg)
        .pop()
        .expect("one photo in, one result out")
}

/// As [`embed_masks`] for several photos; MaskInversion batches their image forwards into one.
pub fn embed_photos(
    model: &ClipModel,
    photos: &[(&RgbImage, &[BinaryMask])],
    stage: EmbedStage,
    cfg: &InversionConfig,
) -> Vec<PhotoEmbeddings> {
    match stage {
        EmbedStage::Invert => match invert_images(model, photos, cfg) {
            Ok(outputs) => outputs
                .into_iter()
                .map(|r| {
                    r.map(|out| {
                        out.masks
                            .into_iter()
                            .map(|m| m.map(|r| r.embedding))
                            .collect()
                    })
                    .map_err(|e| e.to_string())
                })
                .collect(),
            Err(e) => vec![Err(e.to_string()); photos.len()],
        },
        EmbedStage::Baseline(b) => photos
            .iter()
            .map(|(image, masks)| embed_baseline(model, image, masks, b))
            .collect(),
    }
}

fn embed_baseline(
    model: &ClipModel,
    image: &RgbImage,
    masks: &[BinaryMask],
    baseline: baselines::Baseline,
) -> PhotoEmbeddings {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let checks: Vec<Result<(), String>> = masks.iter().map(|m| validate_mask(m, w, h)).collect();
    let valid: Vec<BinaryMask> = masks
        .iter()
        .zip(&checks)
        .filter(|(_, c)| c.is_ok())
        .map(|(m, _)| m.clone())
        .collect();
    let mut embs = if valid.is_empty() {
        Vec::new()
    } else {
        baselines::embed_regions(model, image, &valid, baseline).map_err(|e| e.to_string())?
    }
    .into_iter();
    Ok(checks
        .into_iter()
        .map(|c| c.map(|_| embs.next().expect("one embedding per valid mask")))
        .collect())
}
